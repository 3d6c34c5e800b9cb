"""Driver-side helpers every cloud Function backend shares: payload checks, retry timing.

Each backend speaks its own platform's API, but refuses an oversized payload, waits between
retries of a throttled call and reads ``Retry-After`` the same way; those rules live here once.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

from faasml.errors import PayloadTooLargeError

__all__ = ["backoff_delay", "checked_payload", "excerpt", "retry_after_seconds"]


def checked_payload(
    payload: object, limit: int, *, provider: str, platform: str, why: str
) -> bytes:
    """``payload`` as ``bytes``, refused before anything is sent when it is over ``limit``.

    :param platform: how the message names the limit's owner (``"Lambda"``, ``"OpenFaaS"``).
    :param why: where the limit comes from, shown in parentheses.
    :raises TypeError: ``payload`` is not bytes-like.
    :raises PayloadTooLargeError: it is over ``limit``; the message names the limit.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"payload of {len(data)} bytes exceeds the {platform} limit of {limit} bytes "
            f"({why}); keep large inputs in the object store",
            provider=provider,
        )
    return data


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0 first): exponential, capped, jittered.

    The jitter draws between half and all of the step, so many throttled drivers spread out
    instead of returning together, while no retry comes back sooner than half the step.
    """
    step = min(cap, base * 2.0**attempt)
    return random.uniform(step / 2, step)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def excerpt(text: str | None, limit: int = 200) -> str:
    """A response body quoted for an error message, cut to ``limit`` characters."""
    text = (text or "").strip()
    if not text:
        return "(empty body)"
    if len(text) > limit:
        return f"{text[:limit]!r}... ({len(text)} characters)"
    return repr(text)
