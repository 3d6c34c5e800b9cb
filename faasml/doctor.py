"""``faasml doctor``: check that the configuration is valid and every chosen backend answers."""

from __future__ import annotations

import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faasml.config import CloudConfig, config_path, load_config_file
from faasml.errors import FaaSMLError

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One diagnostic: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str


def _probe_task() -> dict[str, Any]:
    return {"python": platform.python_version(), "pid": os.getpid()}


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = probe()
    except FaaSMLError as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # doctor reports everything; it must not crash on a backend bug
        return Check(name, False, f"unexpected {type(exc).__name__}: {exc}")
    return Check(name, True, f"{detail} ({(time.perf_counter() - started) * 1000:.1f} ms)")


def run_checks(
    provider: str | None = None,
    storage: str | None = None,
    pubsub: str | None = None,
    *,
    timeout: float = 60.0,
) -> list[Check]:
    """Check the config file, then connect and probe the function, store and PubSub.

    :param provider: provider to check (default: the configured one).
    :param storage: object store to check (default: configured or the provider's default).
    :param pubsub: PubSub to check (default: configured or the provider's default).
    :param timeout: seconds to wait for the probe task.
    """
    checks: list[Check] = []
    try:
        load_config_file()
        explicit = {
            k: v for k, v in (("provider", provider), ("storage", storage), ("pubsub", pubsub)) if v
        }
        config = CloudConfig.load(explicit)
        where = config_path()
        checks.append(Check("config", True, f"{where} {'read' if where.exists() else 'absent'}"))
    except FaaSMLError as exc:
        return [Check("config", False, str(exc))]

    import faasml

    try:
        cloud = faasml.connect(
            config.provider, storage=config.storage, pubsub=config.pubsub, progress=False
        )
    except FaaSMLError as exc:
        checks.append(Check("connect", False, f"{type(exc).__name__}: {exc}"))
        return checks
    with cloud:
        checks.append(Check("connect", True, repr(cloud)))
        key = f"faasml-doctor/{uuid.uuid4().hex}"

        def store_probe() -> str:
            cloud.storage.put(key, b"faasml doctor")
            if cloud.storage.get(key, 7, 13) != b"doctor":
                raise FaaSMLError("ranged read returned the wrong bytes")
            cloud.storage.delete(key)
            return f"put/get/delete on {cloud.storage.name!r}"

        def pubsub_probe() -> str:
            topic = f"doctor-{uuid.uuid4().hex[:12]}"
            with cloud.pubsub.subscribe(topic) as sub:
                cloud.pubsub.publish(topic, b"ping")
                message = sub.get(timeout=10)
                if message is None or message.data != b"ping":
                    raise FaaSMLError(f"no message came back on {cloud.pubsub.name!r} in 10 s")
                message.ack()
            return f"publish/receive/ack on {cloud.pubsub.name!r}"

        def function_probe() -> str:
            info = cloud.submit(_probe_task).result(timeout=timeout)
            return f"task ran on {cloud.function.name!r}: python {info['python']}"

        checks.append(_timed("storage", store_probe))
        checks.append(_timed("pubsub", pubsub_probe))
        checks.append(_timed("function", function_probe))
    return checks
