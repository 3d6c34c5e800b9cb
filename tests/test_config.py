"""Layered configuration: kwargs > ``FAASML_*`` env > config.toml > defaults; secrets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from faasml.config import (
    CloudConfig,
    backend_options,
    config_path,
    load_config_file,
    redact,
    resolve_secret,
)
from faasml.errors import ConfigurationError


class TypedBackend:
    """A backend whose constructor has one option of every type the env layer coerces."""

    def __init__(
        self,
        root: str = "/data",
        port: int = 80,
        ratio: float = 0.5,
        verbose: bool = False,
        token: str | None = None,
        *,
        limit: int | None = None,
    ) -> None:
        self.options = dict(
            root=root, port=port, ratio=ratio, verbose=verbose, token=token, limit=limit
        )


class UntypedBackend:
    def __init__(self, level=1):  # type: ignore[no-untyped-def]  # unannotated on purpose
        self.level = level


class LiteralBackend:
    def __init__(self, mode: Literal["fast", "safe"] = "safe") -> None:
        self.mode = mode


TYPED_OPTIONS = ["limit", "port", "ratio", "root", "token", "verbose"]


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty config dir and no ``FAASML_*`` variable from the outer environment."""
    for name in list(os.environ):
        if name.startswith("FAASML_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAASML_CONFIG_DIR", str(tmp_path))
    yield tmp_path


def write_config(config_dir: Path, text: str) -> Path:
    path = config_dir / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the file


def test_config_path_uses_faasml_config_dir(config_dir: Path) -> None:
    assert config_path() == config_dir / "config.toml"


def test_config_path_falls_back_to_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FAASML_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "faasml" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == tmp_path / "home" / ".config" / "faasml" / "config.toml"


def test_missing_file_is_an_empty_config() -> None:
    assert load_config_file() == {}
    assert CloudConfig.load({}) == CloudConfig()


def test_invalid_toml_names_the_file(config_dir: Path) -> None:
    path = write_config(config_dir, "retries = = 3\n")
    with pytest.raises(ConfigurationError, match="not valid TOML") as info:
        load_config_file()
    assert str(path) in str(info.value)
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        CloudConfig.load({})
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        backend_options("typed", TypedBackend, {})


# --------------------------------------------------------------------------- CloudConfig.load


def test_defaults() -> None:
    cfg = CloudConfig.load({})
    assert cfg.provider == "local"
    assert cfg.retries == 2
    assert cfg.storage is None and cfg.pubsub is None and cfg.secret is None


def test_file_overrides_defaults(config_dir: Path) -> None:
    write_config(config_dir, 'provider = "aws"\nretries = 5\nprogress = false\n')
    cfg = CloudConfig.load({})
    assert (cfg.provider, cfg.retries, cfg.progress) == ("aws", 5, False)


def test_env_overrides_file(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(config_dir, 'provider = "aws"\nretries = 5\n')
    monkeypatch.setenv("FAASML_RETRIES", "3")
    cfg = CloudConfig.load({})
    assert cfg.retries == 3
    assert cfg.provider == "aws"  # untouched options still come from the file


def test_kwargs_override_env_and_file(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(config_dir, "retries = 5\n")
    monkeypatch.setenv("FAASML_RETRIES", "3")
    assert CloudConfig.load({"retries": 1}).retries == 1


def test_kwargs_win_even_when_falsy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_RETRIES", "3")
    monkeypatch.setenv("FAASML_CLEANUP", "true")
    cfg = CloudConfig.load({"retries": 0, "cleanup": False})
    assert (cfg.retries, cfg.cleanup) == (0, False)


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("FAASML_RETRIES", "7", "retries", 7),
        ("FAASML_RETRY_BACKOFF", "0.25", "retry_backoff", 0.25),
        ("FAASML_TASK_TIMEOUT", "30", "task_timeout", 30.0),
        ("FAASML_TASK_TIMEOUT", "none", "task_timeout", None),
        ("FAASML_PROGRESS", "off", "progress", False),
        ("FAASML_PROGRESS", "yes", "progress", True),
        ("FAASML_PROGRESS", "", "progress", None),
        ("FAASML_CLEANUP", "0", "cleanup", False),
        ("FAASML_PROVIDER", "openwhisk", "provider", "openwhisk"),
        ("FAASML_INLINE_BYTES", "1024", "inline_bytes", 1024),
        ("FAASML_SECRET", "s3cr3t", "secret", "s3cr3t"),
    ],
)
def test_env_is_coerced_to_the_annotated_type(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(var, raw)
    value = getattr(CloudConfig.load({}), field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("FAASML_RETRIES", "abc"),
        ("FAASML_RETRIES", "1.5"),
        ("FAASML_RETRY_BACKOFF", "fast"),
        ("FAASML_CLEANUP", "maybe"),
    ],
)
def test_bad_env_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigurationError) as info:
        CloudConfig.load({})
    assert var in str(info.value)
    assert repr(raw) in str(info.value)


def test_unknown_top_level_key_in_file_lists_valid_options(config_dir: Path) -> None:
    path = write_config(config_dir, "retries = 1\nretrys = 3\n")
    with pytest.raises(ConfigurationError) as info:
        CloudConfig.load({})
    message = str(info.value)
    assert str(path) in message
    assert "retrys" in message
    for name in CloudConfig.field_names():
        assert name in message
    assert "[backends.<name>]" in message


def test_backends_tables_are_not_cloud_options(config_dir: Path) -> None:
    write_config(config_dir, "retries = 4\n[backends.redis]\nurl = 'redis://x'\n")
    assert CloudConfig.load({}).retries == 4


def test_field_names_match_the_dataclass() -> None:
    assert CloudConfig.field_names()[:3] == ["provider", "storage", "pubsub"]
    assert set(CloudConfig.field_names()) == set(CloudConfig.__dataclass_fields__)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"retries": -1}, "retries"),
        ({"retry_backoff": -0.1}, "retry_backoff"),
        ({"task_timeout": 0}, "task_timeout"),
        ({"task_timeout": -5.0}, "task_timeout"),
        ({"inline_bytes": -1}, "inline_bytes"),
    ],
)
def test_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        CloudConfig(**kwargs)


def test_validation_applies_to_every_layer(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAASML_RETRIES", "-2")
    with pytest.raises(ConfigurationError, match="retries"):
        CloudConfig.load({})
    monkeypatch.delenv("FAASML_RETRIES")
    write_config(config_dir, "task_timeout = 0.0\n")
    with pytest.raises(ConfigurationError, match="task_timeout"):
        CloudConfig.load({})


def test_boundaries_are_valid() -> None:
    cfg = CloudConfig(retries=0, retry_backoff=0, inline_bytes=0, task_timeout=0.001)
    assert cfg.retries == 0


def test_secret_is_not_in_repr() -> None:
    assert "s3cr3t" not in repr(CloudConfig(secret="s3cr3t"))


def test_config_is_frozen() -> None:
    cfg = CloudConfig()
    with pytest.raises(AttributeError):
        cfg.retries = 9  # type: ignore[misc]


def test_wrong_type_in_file_is_a_configuration_error(config_dir: Path) -> None:
    path = write_config(config_dir, 'retries = "three"\n')
    with pytest.raises(ConfigurationError) as info:
        CloudConfig.load({})
    assert "retries" in str(info.value)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- backend_options


def test_backend_options_nothing_configured_leaves_constructor_defaults() -> None:
    assert backend_options("typed", TypedBackend, {}) == {}


def test_backend_options_file(config_dir: Path) -> None:
    write_config(config_dir, '[backends.typed]\nroot = "/srv"\nport = 8080\n')
    assert backend_options("typed", TypedBackend, {}) == {"root": "/srv", "port": 8080}


def test_backend_options_env_overrides_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(config_dir, '[backends.typed]\nroot = "/srv"\nport = 8080\n')
    monkeypatch.setenv("FAASML_TYPED_PORT", "9090")
    assert backend_options("typed", TypedBackend, {}) == {"root": "/srv", "port": 9090}


def test_backend_options_kwargs_override_env_and_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(config_dir, "[backends.typed]\nport = 8080\nratio = 0.1\n")
    monkeypatch.setenv("FAASML_TYPED_PORT", "9090")
    monkeypatch.setenv("FAASML_TYPED_RATIO", "0.2")
    merged = backend_options("typed", TypedBackend, {"port": 1, "verbose": False})
    assert merged == {"port": 1, "ratio": 0.2, "verbose": False}
    TypedBackend(**merged)  # the merged dict is valid constructor kwargs


@pytest.mark.parametrize(
    ("option", "raw", "expected"),
    [
        ("root", "/mnt/x", "/mnt/x"),
        ("port", "8080", 8080),
        ("ratio", "0.75", 0.75),
        ("ratio", "2", 2.0),
        ("verbose", "true", True),
        ("verbose", "No", False),
        ("token", "abc", "abc"),
        ("limit", "12", 12),
        ("limit", "none", None),
        ("limit", "", None),
    ],
)
def test_backend_env_is_coerced_to_the_annotated_type(
    monkeypatch: pytest.MonkeyPatch, option: str, raw: str, expected: object
) -> None:
    monkeypatch.setenv(f"FAASML_TYPED_{option.upper()}", raw)
    merged = backend_options("typed", TypedBackend, {})
    assert merged == {option: expected}
    assert type(merged[option]) is type(expected)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("FAASML_TYPED_PORT", "eighty"),
        ("FAASML_TYPED_RATIO", "half"),
        ("FAASML_TYPED_VERBOSE", "loud"),
        ("FAASML_TYPED_LIMIT", "many"),
    ],
)
def test_backend_bad_env_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigurationError, match=var):
        backend_options("typed", TypedBackend, {})


def test_backend_env_of_another_backend_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_OTHER_PORT", "1")
    monkeypatch.setenv("FAASML_PORT", "2")
    assert backend_options("typed", TypedBackend, {}) == {}


def test_backend_without_annotations_gets_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_UNTYPED_LEVEL", "3")
    assert backend_options("untyped", UntypedBackend, {}) == {"level": "3"}


def test_backend_unknown_kwarg_lists_valid_options() -> None:
    with pytest.raises(ConfigurationError) as info:
        backend_options("typed", TypedBackend, {"prot": 1})
    message = str(info.value)
    assert "'prot'" in message
    assert "'typed'" in message
    assert str(TYPED_OPTIONS) in message


def test_backend_unknown_file_key_names_table_and_lists_valid_options(config_dir: Path) -> None:
    path = write_config(config_dir, "[backends.typed]\nprot = 1\n")
    with pytest.raises(ConfigurationError) as info:
        backend_options("typed", TypedBackend, {})
    message = str(info.value)
    assert str(path) in message
    assert "[backends.typed]" in message
    assert "'prot'" in message
    assert str(TYPED_OPTIONS) in message


def test_backend_tables_of_other_backends_are_not_checked(config_dir: Path) -> None:
    write_config(config_dir, "[backends.other]\nanything = 1\n")
    assert backend_options("typed", TypedBackend, {}) == {}


def test_backend_section_must_be_a_table(config_dir: Path) -> None:
    write_config(config_dir, "[backends]\ntyped = 3\n")
    with pytest.raises(ConfigurationError, match=r"\[backends.typed\] must be a table"):
        backend_options("typed", TypedBackend, {})


def test_backends_key_must_be_a_table(config_dir: Path) -> None:
    write_config(config_dir, "backends = 3\n")
    with pytest.raises(ConfigurationError, match="backends"):
        backend_options("typed", TypedBackend, {})


def test_backend_env_literal_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAASML_LITERAL_MODE", "fast")
    assert backend_options("literal", LiteralBackend, {}) == {"mode": "fast"}


# --------------------------------------------------------------------------- secrets


def test_resolve_secret_plain_values() -> None:
    assert resolve_secret(None) is None
    assert resolve_secret("plain") == "plain"


def test_resolve_secret_env_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_FAASML_TEST_SECRET", "hunter2")
    assert resolve_secret({"$env": "MY_FAASML_TEST_SECRET"}) == "hunter2"


def test_resolve_secret_unset_env_ref_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_FAASML_TEST_SECRET", raising=False)
    with pytest.raises(ConfigurationError) as info:
        resolve_secret({"$env": "MY_FAASML_TEST_SECRET"}, what="redis password")
    assert "MY_FAASML_TEST_SECRET" in str(info.value)
    assert "redis password" in str(info.value)


@pytest.mark.parametrize(
    "value", [{"$file": "/etc/secret"}, {"$env": "A", "extra": "B"}, 42, ["a"]]
)
def test_resolve_secret_rejects_other_shapes(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"\$env"):
        resolve_secret(value)


def test_redact() -> None:
    assert redact("hunter2") == "***"
    assert redact(None) is None
    assert redact("") == ""
    ref = {"$env": "AWS_SECRET_ACCESS_KEY"}
    shown = redact(ref)
    assert shown == ref
    assert shown is not ref  # a copy: printing code cannot mutate the config through it
