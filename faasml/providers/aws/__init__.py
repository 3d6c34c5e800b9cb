"""The ``aws`` provider: AWS Lambda as the Function backend (S3 and SQS are its defaults).

This module only registers the backend; it imports no boto3, so listing providers works without
the ``aws`` extra installed.
"""

from __future__ import annotations

from faasml.hooks import FunctionBackend, hookimpl


@hookimpl
def faasml_function_backends() -> list[FunctionBackend]:
    """Register the AWS Lambda backend."""
    return [
        FunctionBackend(
            "aws",
            "faasml.providers.aws.function:LambdaFunction",
            extra="aws",
            requires=("boto3",),
            description="AWS Lambda (invoke, deploy a zip)",
            default_storage="s3",
            default_pubsub="sqs",
        )
    ]
