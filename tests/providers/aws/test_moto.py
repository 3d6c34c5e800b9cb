"""Deploy against moto's Lambda: the real service model accepts what deploy sends."""

from __future__ import annotations

import json

import boto3
import pytest

moto = pytest.importorskip("moto")

from faasml.errors import NotFoundError  # noqa: E402
from faasml.providers.aws.function import HANDLER, LambdaFunction  # noqa: E402

from .conftest import SECRET  # noqa: E402


def test_deploy_create_update_against_moto() -> None:
    with moto.mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = iam.create_role(RoleName="faasml-lambda", AssumeRolePolicyDocument=json.dumps(trust))
        backend = LambdaFunction(
            "faasml-moto",
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            role=role["Role"]["Arn"],
            timeout=30.0,
            memory_mb=256,
            architecture="arm64",
        )
        backend.deploy_poll_delay = 0.01
        backend.deploy_poll_attempts = 50
        assert "created" in backend.deploy(secret=SECRET, dependencies=False)
        assert "unchanged" in backend.deploy(secret=SECRET, dependencies=False)
        line = backend.deploy(secret=SECRET, environment={"EXTRA": "1"}, dependencies=False)
        assert "updated configuration (Environment)" in line

        config = boto3.client("lambda", region_name="us-east-1").get_function_configuration(
            FunctionName="faasml-moto"
        )
        assert config["Handler"] == HANDLER
        assert config["Runtime"] == "python3.11"
        assert config["Timeout"] == 30 and config["MemorySize"] == 256
        assert config["Architectures"] == ["arm64"]
        assert config["Environment"]["Variables"] == {"EXTRA": "1", "FAASML_SECRET": SECRET}
        backend.delete()
        with pytest.raises(NotFoundError, match="faasml deploy"):
            backend.delete()
        backend.close()
