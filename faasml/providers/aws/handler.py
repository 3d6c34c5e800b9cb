"""The AWS Lambda entry point: ``faasml.providers.aws.handler.lambda_handler``.

Lambda calls ``lambda_handler(event, context)`` with the JSON event the caller sent. faasml sends
its binary payload as the envelope ``{"faasml": "<base64>"}`` and gets the bytes result back the
same way. A handler exception propagates on purpose: the Lambda Python runtime then reports it
natively (``X-Amz-Function-Error: Unhandled`` with ``errorType``, ``errorMessage`` and
``stackTrace``), which :class:`~faasml.providers.aws.function.LambdaFunction` turns into a
:class:`~faasml.errors.FunctionError`.

This module runs inside Lambda: it imports only the standard library and faasml's shim.
"""

from __future__ import annotations

from typing import Any

from faasml.providers._shim import target, unwrap, wrap

__all__ = ["lambda_handler"]


def lambda_handler(event: Any, context: Any) -> dict[str, str]:
    """Run the bytes handler named by ``$FAASML_HANDLER`` on the payload inside ``event``.

    :param event: the invocation event, a faasml envelope.
    :param context: Lambda's context object (unused: the bytes handler needs nothing from it).
    :returns: the handler's result as a faasml envelope.
    :raises ValueError: ``event`` is not a faasml envelope.
    """
    return wrap(target()(unwrap(event)))
