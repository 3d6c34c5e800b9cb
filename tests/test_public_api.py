"""Guards on the public surface: exports complete and sorted, no eager cloud SDK imports."""

from __future__ import annotations

import subprocess
import sys

import faasml
from faasml import errors


def test_all_is_sorted_and_importable() -> None:
    assert faasml.__all__ == sorted(faasml.__all__, key=str.lower) or faasml.__all__ == sorted(
        faasml.__all__
    )
    for name in faasml.__all__:
        assert hasattr(faasml, name), name


def test_design_contract_names_exist() -> None:
    for name in ("connect", "wait", "gather", "Cloud", "hookimpl", "errors"):
        assert name in faasml.__all__
    assert issubclass(errors.NotFoundError, errors.FaaSMLError)


def test_import_faasml_loads_no_cloud_sdk() -> None:
    code = (
        "import sys, faasml, faasml.registry as r\n"
        "for kind in ('function', 'storage', 'pubsub'): r.backends(kind)\n"
        "heavy = [m for m in ('boto3', 'botocore', 'redis', 'nats', 'oss2', 'fc2', 'obs',"
        " 'libcloud', 'huaweicloudsdkcore', 'mns', 'matplotlib', 'pandas', 'sklearn')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported eagerly: {out.stdout}"
