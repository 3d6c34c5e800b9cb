"""Helpers shared by the ObjectStore backends (and, for secrets, by the PubSub backends).

* :func:`byte_view`: the one way a ``put`` turns its ``data`` into flat bytes;
* :func:`normalize_prefix` and :func:`listed_key`: the ``prefix=`` of stores that keep objects
  under ``<prefix>/``, and the keys of what they list;
* :func:`exportable_secret` and :func:`exportable_secrets`: the rule that only
  ``{"$env": "VAR"}`` references of secrets may appear in ``to_config()``, whose dict travels to
  workers;
* :data:`HTTP_STATUS_MAP` and :func:`retry_after_seconds`: the HTTP status fallback of the
  error tables of HTTP object stores, and the ``Retry-After`` header of a throttled answer;
* :func:`is_empty_range`, :func:`range_spec`, :func:`clamp_range` and :func:`slice_answer`: the
  arithmetic between ``get(key, start, end)`` (``data[start:end]``) and what the services take
  and give (inclusive HTTP ranges, answers that may ignore the range).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ThrottledError,
)
from faasml.interfaces import validate_key

__all__ = [
    "HTTP_STATUS_MAP",
    "SecretValue",
    "byte_view",
    "clamp_range",
    "exportable_secret",
    "exportable_secrets",
    "is_empty_range",
    "is_env_reference",
    "listed_key",
    "normalize_prefix",
    "range_spec",
    "retry_after_seconds",
    "slice_answer",
]

#: a secret as constructors accept it: a literal, ``{"$env": "VAR"}``, or ``None``.
SecretValue = str | dict[str, str] | None

#: HTTP status -> faasml error, for answers whose error code a store's own table does not know
#: (HEAD answers have no body, so no code at all).
HTTP_STATUS_MAP: Mapping[int, type[ProviderError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: AlreadyExistsError,
    429: ThrottledError,
    500: ServiceUnavailableError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """Return a flat unsigned-byte view of ``data`` without copying when possible.

    :raises TypeError: ``data`` does not support the buffer protocol (``str`` for instance).
    """
    view = memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` ending in ``/`` ("" stays ""), or raise ConfigurationError."""
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    try:
        validate_key(stripped)
    except ValueError as exc:
        raise ConfigurationError(f"store prefix {prefix!r} is not a valid key path: {exc}") from exc
    return stripped + "/"


def is_env_reference(value: object) -> bool:
    """Whether ``value`` is a ``{"$env": "VAR"}`` reference to an environment variable."""
    return isinstance(value, Mapping) and set(value) == {"$env"}


def exportable_secret(
    value: object,
    option: str,
    *,
    what: str | None = None,
    runner: str = "backend",
    message: str | None = None,
) -> dict[str, str] | None:
    """Return how a secret may appear in ``to_config()``: ``None``, or its ``$env`` reference.

    :param value: the secret as the constructor got it: ``None``, ``{"$env": "VAR"}`` or a
        literal.
    :param option: the constructor option that takes it, named in the advice.
    :param what: how the message names the secret (default: ``option``).
    :param runner: what runs where ``VAR`` must be exported (``"backend"``, ``"store"``).
    :param message: replaces the whole default message.
    :raises ConfigurationError: ``value`` is a literal (anything but ``None`` and a
        ``{"$env": "VAR"}`` mapping): secret values never travel in task payloads.
    """
    if value is None:
        return None
    if isinstance(value, Mapping) and is_env_reference(value):
        return {"$env": str(value["$env"])}
    raise ConfigurationError(
        message
        or f"{what or option} was given as a literal string, which cannot be put in a config "
        f'that travels to workers; pass {option}={{"$env": "VAR"}} and export VAR where the '
        f"{runner} runs"
    )


def exportable_secrets(
    secrets: Mapping[str, object], *, runner: str = "backend"
) -> dict[str, dict[str, str]]:
    """The ``to_config()`` entries of several secret options: references only, unset ones left out.

    :raises ConfigurationError: one of them is a literal (see :func:`exportable_secret`).
    """
    exported = {
        option: exportable_secret(value, option, runner=runner) for option, value in secrets.items()
    }
    return {option: ref for option, ref in exported.items() if ref is not None}


def listed_key(name: str, prefix: str) -> str | None:
    """The key of a listed object named ``name`` in a store under ``prefix``, or ``None``.

    ``None`` stands for names that are not valid faasml keys (``dir/`` folder markers written by
    consoles, for instance): listings skip them.
    """
    key = name[len(prefix) :]
    try:
        return validate_key(key)
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, object]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if there is one.

    Header names are matched case-insensitively.
    """
    raw = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if raw is None or raw == "":
        return None
    try:
        return max(0.0, float(str(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_empty_range(start: int | None, end: int | None) -> bool:
    """Whether ``data[start:end]`` is empty whatever the object: ``end`` at or before ``start``."""
    return end is not None and end <= (start or 0)


def range_spec(start: int, end: int | None) -> str:
    """``data[start:end]`` as an inclusive HTTP byte range without the unit: ``"0-9"``, ``"5-"``."""
    return f"{start}-{'' if end is None else end - 1}"


def clamp_range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """``(lo, hi)`` of ``data[start:end]`` in an object of ``size`` bytes; empty when hi <= lo."""
    return min(start or 0, size), size if end is None else min(end, size)


def slice_answer(data: bytes, start: int, end: int | None, *, whole: bool) -> bytes:
    """The bytes of ``[start, end)`` in the answer to a ranged read.

    :param data: the answer's body.
    :param whole: the service ignored the range and sent the whole object (HTTP 200, not 206);
        otherwise ``data`` starts at ``start`` and may run past ``end``.
    """
    if whole:
        return data[start:end]
    return data if end is None else data[: end - start]
