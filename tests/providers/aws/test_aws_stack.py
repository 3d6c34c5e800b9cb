"""The whole AWS path: ``faasml deploy`` then ``faasml.connect("aws")`` with S3 and SQS/SNS.

S3, SQS and SNS are moto_server on loopback (real HTTP, the real botocore models); Lambda is
the emulator, which runs the deployed handler shim in separate processes. The function
processes reach S3 and SQS with the credentials a Lambda execution role would put in their
environment. Nothing here is specific to a test backend: the driver names the provider by its
string, as a user script does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import faasml
from faasml.algorithms import SparseLogisticRegression
from faasml.cli import main

from .conftest import ROLE, SECRET
from .emulator import REGION, LambdaEmulator

pytestmark = pytest.mark.service


@pytest.fixture
def aws_stack(
    emulator: LambdaEmulator,
    moto_url: str,
    fake_aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """Environment and options of a deployed faasml function on the emulated AWS."""
    name = f"stack-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FAASML_SECRET", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    options = {
        "function_options": {
            "function_name": name,
            "endpoint_url": emulator.endpoint_url,
            "timeout": 60.0,
        },
        "storage_options": {
            "bucket": f"faasml-{uuid.uuid4().hex[:12]}",
            "endpoint_url": moto_url,
            "create_bucket": True,
        },
        "pubsub_options": {
            "endpoint_url": moto_url,
            "prefix": f"t{uuid.uuid4().hex[:8]}-",
            "wait_seconds": 1,
        },
    }
    yield options


def deploy_with_the_cli(options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    function = options["function_options"]
    status = main(
        [
            "deploy",
            "--provider",
            "aws",
            "--option",
            f"function_name={function['function_name']}",
            "--option",
            f"endpoint_url={function['endpoint_url']}",
            "--option",
            f"role={ROLE}",
            "--option",
            "timeout=60",
            "--option",
            "memory_mb=1024",
            "--no-dependencies",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert SECRET not in captured.out + captured.err
    return captured.out


def test_deploy_then_map_through_lambda_s3_and_sqs(
    aws_stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    line = deploy_with_the_cli(aws_stack, capsys)
    assert aws_stack["function_options"]["function_name"] in line
    with faasml.connect("aws", retries=1, progress=False, **aws_stack) as cloud:
        assert cloud.function.name == "aws"
        assert cloud.storage.name == "s3" and cloud.pubsub.name == "sqs"
        assert list(cloud.map(pow, [2, 3, 4], [5, 2, 3])) == [32, 9, 64]


def test_training_runs_unchanged_on_the_aws_stack(
    aws_stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_with_the_cli(aws_stack, capsys)
    rng = np.random.default_rng(0)
    X = sp.random(600, 40, density=0.2, format="csr", random_state=1)
    w = rng.standard_normal(40)
    y = (X @ w + 0.1 * rng.standard_normal(600) > 0).astype(int)
    with faasml.connect("aws", retries=1, progress=False, **aws_stack) as cloud:
        model = SparseLogisticRegression(
            workers=1, epochs=3, batch_size=100, progress=False, seed=0
        ).fit(X[:500], y[:500], cloud=cloud)
    assert model.score(X[500:], y[500:]) > 0.75
    assert model.history_, "the fit recorded no history"
