"""The faasml exception tree.

Every error faasml raises derives from :class:`FaaSMLError`; several also derive from the
builtin a caller would naturally catch (``KeyError``, ``ImportError``, ``LookupError``,
``TimeoutError``, ``ArithmeticError``)::

    FaaSMLError
    ├── ConfigurationError            bad or missing configuration (also ValueError)
    ├── MissingDependencyError        an optional extra is not installed (also ImportError)
    ├── PluginError                   a plugin is broken or two plugins clash
    ├── UnknownBackendError           no backend of that name (also KeyError)
    ├── DataFormatError               malformed input data (also ValueError)
    ├── DivergenceError               training diverged to NaN/inf (also ArithmeticError)
    ├── InvalidKeyError               an object key that could escape its store (also ValueError)
    ├── InvalidTopicError             a non-portable topic or group name (also ValueError)
    ├── SignatureError                a task payload failed HMAC verification
    ├── SerializationError            a function or value cannot be (de)serialized
    ├── WorkerDiedError               the process running a task died (retriable)
    ├── FunctionError                 user code raised remotely; carries type name and traceback
    └── ProviderError                 a backend service said no
        ├── AuthenticationError
        ├── PermissionDeniedError
        ├── NotFoundError             (also LookupError)
        ├── AlreadyExistsError
        ├── PayloadTooLargeError
        ├── ThrottledError            carries ``retry_after`` (retriable)
        ├── ServiceUnavailableError   (retriable)
        └── InvocationTimeoutError    (also TimeoutError; retriable)

``retriable`` is a class attribute that is true only where trying again can help. All errors
pickle and unpickle with their attributes, because they cross the function boundary.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "ConfigurationError",
    "DataFormatError",
    "DivergenceError",
    "FaaSMLError",
    "FunctionError",
    "InvalidKeyError",
    "InvalidTopicError",
    "InvocationTimeoutError",
    "MissingDependencyError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PluginError",
    "ProviderError",
    "SerializationError",
    "ServiceUnavailableError",
    "SignatureError",
    "ThrottledError",
    "UnknownBackendError",
    "WorkerDiedError",
]


class FaaSMLError(Exception):
    """Base class of every error raised by faasml.

    Subclasses store their keyword attributes in ``_kwargs`` so the exception pickles with them.
    """

    retriable: bool = False

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message)
        self.message = message
        self._kwargs = kwargs
        for name, value in kwargs.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.message, self._kwargs))

    def __str__(self) -> str:
        return self.message


def _rebuild_error(cls: type[FaaSMLError], message: str, kwargs: dict[str, Any]) -> FaaSMLError:
    return cls(message, **kwargs)


class ConfigurationError(FaaSMLError, ValueError):
    """The configuration is invalid or incomplete; the message names the key to fix."""


class MissingDependencyError(FaaSMLError, ImportError):
    """An optional dependency is missing; the message carries the exact ``pip install`` line."""


class PluginError(FaaSMLError):
    """A plugin failed to load, declared a bad record, or clashes with another plugin."""


class UnknownBackendError(FaaSMLError, KeyError):
    """No backend is registered under the requested name; the message lists the choices."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class DataFormatError(FaaSMLError, ValueError):
    """Input data is malformed; the message names the file, line and what was expected."""


class DivergenceError(FaaSMLError, ArithmeticError):
    """Training diverged: a loss or the weights became NaN or infinite (step size too large for
    the scale of the features, typically)."""


class InvalidKeyError(FaaSMLError, ValueError):
    """An object key is empty, absolute, or has ``..``/empty segments: it escapes."""


class InvalidTopicError(FaaSMLError, ValueError):
    """A topic or group name uses characters that not every PubSub backend accepts."""


class SignatureError(FaaSMLError):
    """A task payload is unsigned, signed with another secret, or was modified in transit."""


class SerializationError(FaaSMLError):
    """A function, argument or result cannot be serialized or deserialized."""


class WorkerDiedError(FaaSMLError):
    """The process running a task died before reporting a result (crash, OOM, ``os._exit``)."""

    retriable = True


class FunctionError(FaaSMLError):
    """User code raised an exception inside the function.

    Raised locally when the remote exception type cannot be imported or rebuilt.

    :param remote_type: qualified name of the remote exception type.
    :param remote_traceback: the formatted remote traceback.
    """

    remote_type: str | None = None
    remote_traceback: str | None = None


class ProviderError(FaaSMLError):
    """A backend service refused or failed a request.

    :param provider: the backend name (``"s3"``, ``"local"``, ...).
    :param code: the service's own error code, when it gave one.
    :param status: the HTTP status, when there was one.
    :param request_id: the service's request id, for support tickets.
    """

    provider: str | None
    code: str | None
    status: int | None
    request_id: str | None

    def __init__(
        self,
        message: str = "",
        *,
        provider: str | None = None,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            message, provider=provider, code=code, status=status, request_id=request_id, **kwargs
        )


class AuthenticationError(ProviderError):
    """The credentials are missing, wrong or expired."""


class PermissionDeniedError(ProviderError):
    """The credentials are valid but not allowed to do this."""


class NotFoundError(ProviderError, LookupError):
    """The object, topic, function or bucket does not exist."""


class AlreadyExistsError(ProviderError):
    """A write-once object or a resource already exists."""


class PayloadTooLargeError(ProviderError):
    """A payload or message exceeds a backend limit; the message names the limit."""


class ThrottledError(ProviderError):
    """The service throttled the request.

    :param retry_after: seconds the service asked us to wait, if it said.
    """

    retriable = True
    retry_after: float | None

    def __init__(self, message: str = "", *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)


class ServiceUnavailableError(ProviderError):
    """The service is down or unreachable; the message names the endpoint."""

    retriable = True


class InvocationTimeoutError(ProviderError, TimeoutError):
    """A function invocation ran past its time limit and was stopped."""

    retriable = True
