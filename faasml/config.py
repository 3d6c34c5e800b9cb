"""Layered, typed configuration.

Precedence, highest first:

1. keyword arguments to :func:`faasml.connect` (or a backend constructor);
2. environment: ``FAASML_<OPTION>`` for cloud options, ``FAASML_<BACKEND>_<OPTION>`` for a
   backend's (``FAASML_REDIS_URL``);
3. ``$FAASML_CONFIG_DIR/config.toml`` (default ``~/.config/faasml/config.toml``): top-level cloud
   options and one ``[backends.<name>]`` table per backend;
4. defaults (the backend constructor's defaults).

Unknown keys are rejected with the list of valid ones. A secret may be given as
``{"$env": "VAR"}``: it stays a reference in every serialized config and is resolved with
:func:`resolve_secret` only where it is used, so secret values never travel in task payloads.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faasml.errors import ConfigurationError

__all__ = [
    "CloudConfig",
    "backend_options",
    "config_path",
    "load_config_file",
    "redact",
    "resolve_secret",
]

SecretRef = dict[str, str]


@dataclasses.dataclass(frozen=True)
class CloudConfig:
    """Options of :class:`faasml.Cloud` itself (backend options live with each backend).

    :param provider: the Function backend (``"local"``, ``"aws"``, ...).
    :param storage: the ObjectStore backend; ``None`` takes the provider's default.
    :param pubsub: the PubSub backend; ``None`` takes the provider's default.
    :param secret: HMAC key that signs task payloads: a string or ``{"$env": "VAR"}``; ``None``
        makes a random one, which only works where the driver starts the workers (``local``).
    :param retries: how many times a failed retriable task is tried again.
    :param retry_backoff: base of the exponential backoff between attempts, in seconds.
    :param task_timeout: seconds the driver waits for one attempt before it counts as lost;
        ``None`` uses the function backend's time limit plus a grace period.
    :param progress: show a progress bar (``None``: on a terminal or in Jupyter).
    :param cleanup: delete a job's objects from the store once its results are collected.
    :param inline_bytes: inputs and results up to this size travel inside the invocation
        payload and the completion message instead of as separate objects.
    :param prefix: key prefix under which jobs are stored.
    :param compression: zlib-compress task data and results when it shrinks them; ``None``
        decides by the store: off for stores on this machine (``same_host``), where copying
        is faster than compressing, on otherwise.
    """

    provider: str = "local"
    storage: str | None = None
    pubsub: str | None = None
    secret: str | SecretRef | None = dataclasses.field(default=None, repr=False)
    retries: int = 2
    retry_backoff: float = 0.2
    task_timeout: float | None = None
    progress: bool | None = None
    cleanup: bool = True
    inline_bytes: int = 64 * 1024
    prefix: str = "jobs"
    compression: bool | None = None

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigurationError(f"retries must be >= 0, got {self.retries}")
        if self.retry_backoff < 0:
            raise ConfigurationError(f"retry_backoff must be >= 0, got {self.retry_backoff}")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ConfigurationError(f"task_timeout must be > 0, got {self.task_timeout}")
        if self.inline_bytes < 0:
            raise ConfigurationError(f"inline_bytes must be >= 0, got {self.inline_bytes}")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every cloud option."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def load(cls, explicit: Mapping[str, Any]) -> CloudConfig:
        """Build from ``explicit`` kwargs over environment over config file over defaults."""
        file_cfg = {k: v for k, v in load_config_file().items() if k != "backends"}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name in cls.field_names():
            env = os.environ.get(f"FAASML_{name.upper()}")
            if name in explicit:
                values[name] = explicit[name]
            elif env is not None:
                values[name] = _coerce(env, hints[name], f"FAASML_{name.upper()}")
            elif name in file_cfg:
                values[name] = file_cfg[name]
        unknown = set(file_cfg) - set(cls.field_names())
        if unknown:
            raise ConfigurationError(
                f"{config_path()}: unknown option(s) {sorted(unknown)}; valid top-level options: "
                f"{cls.field_names()}, plus [backends.<name>] tables"
            )
        for name, value in values.items():
            source = "argument" if name in explicit else f"{config_path()}"
            if not _matches(value, hints[name]):
                raise ConfigurationError(
                    f"option {name!r} ({source}) must be {_type_name(hints[name])}, "
                    f"got {type(value).__name__} {value!r}"
                )
        return cls(**values)


def config_path() -> Path:
    """Where the config file is read from."""
    base = os.environ.get("FAASML_CONFIG_DIR")
    if base:
        return Path(base) / "config.toml"
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "faasml" / "config.toml"


def load_config_file() -> dict[str, Any]:
    """Read the config file; a missing file is an empty config.

    :raises ConfigurationError: the file is not valid TOML.
    """
    path = config_path()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters a backend class accepts."""
    sig = inspect.signature(cls)
    return {
        name: p
        for name, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def backend_options(name: str, cls: type, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the layers for backend ``name`` into constructor kwargs for ``cls``.

    :raises ConfigurationError: an unknown key, or an environment value of the wrong type.
    """
    params = constructor_parameters(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations in a third-party backend: skip coercion
        hints = {}
    merged: dict[str, Any] = {}
    tables = load_config_file().get("backends", {})
    if not isinstance(tables, dict):
        raise ConfigurationError(
            f"{config_path()}: 'backends' must be a table of [backends.<name>]"
        )
    section = tables.get(name, {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{config_path()}: [backends.{name}] must be a table")
    _reject_unknown(section, params, f"{config_path()} [backends.{name}]")
    merged.update(section)
    for key in params:
        env_name = f"FAASML_{name.upper()}_{key.upper()}"
        if env_name in os.environ:
            merged[key] = _coerce(os.environ[env_name], hints.get(key, str), env_name)
    _reject_unknown(explicit, params, f"backend {name!r}")
    merged.update(explicit)
    return merged


def _reject_unknown(given: Mapping[str, Any], params: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {unknown} for {where}; valid options: {sorted(params)}"
        )


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (ints are accepted for floats)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def _coerce(raw: str, hint: Any, source: str) -> Any:
    """Turn an environment string into the annotated type."""
    if typing.get_origin(hint) is typing.Literal:
        for allowed in typing.get_args(hint):
            if str(allowed) == raw.strip():
                return allowed
        raise ConfigurationError(f"{source}={raw!r} is not one of {list(typing.get_args(hint))}")
    options = typing.get_args(hint) or (hint,)
    for target in options:
        if typing.get_origin(target) is typing.Literal:
            try:
                return _coerce(raw, target, source)
            except ConfigurationError:
                continue
        if target is type(None):
            if raw.strip().lower() in ("", "none", "null"):
                return None
            continue
        try:
            if target is bool:
                low = raw.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                continue
            if target in (int, float):
                return target(raw)
            if target is str:
                return raw
        except ValueError:
            continue
    raise ConfigurationError(f"{source}={raw!r} is not a valid {hint}")


def resolve_secret(value: str | SecretRef | None, what: str = "secret") -> str | None:
    """Return the secret's value: a plain string as is, ``{"$env": "VAR"}`` from the environment.

    :raises ConfigurationError: the variable is not set, naming it.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and set(value) == {"$env"}:
        var = value["$env"]
        if var not in os.environ:
            raise ConfigurationError(f"{what} is read from ${var}, which is not set; export {var}")
        return os.environ[var]
    raise ConfigurationError(f'{what} must be a string or {{"$env": "VAR"}}, got {type(value)}')


def redact(value: object) -> object:
    """Return ``value`` safe to print: strings are masked, ``$env`` references kept."""
    if isinstance(value, Mapping) and set(value) == {"$env"}:
        return dict(value)
    return "***" if value else value
