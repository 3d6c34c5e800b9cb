"""The error tree: bases (including builtins), ``retriable``, pickling, ``__all__``."""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import pytest

from faasml import errors
from faasml.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    DataFormatError,
    DivergenceError,
    FaaSMLError,
    FunctionError,
    InvalidKeyError,
    InvalidTopicError,
    InvocationTimeoutError,
    MissingDependencyError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PluginError,
    ProviderError,
    SerializationError,
    ServiceUnavailableError,
    SignatureError,
    ThrottledError,
    UnknownBackendError,
    WorkerDiedError,
)

#: every class and the bases it must have, builtins included: callers catch by either.
EXPECTED_BASES: dict[type[Exception], tuple[type[BaseException], ...]] = {
    FaaSMLError: (Exception,),
    ConfigurationError: (FaaSMLError, ValueError),
    MissingDependencyError: (FaaSMLError, ImportError),
    PluginError: (FaaSMLError,),
    UnknownBackendError: (FaaSMLError, KeyError, LookupError),
    DataFormatError: (FaaSMLError, ValueError),
    DivergenceError: (FaaSMLError, ArithmeticError),
    InvalidKeyError: (FaaSMLError, ValueError),
    InvalidTopicError: (FaaSMLError, ValueError),
    SignatureError: (FaaSMLError,),
    SerializationError: (FaaSMLError,),
    WorkerDiedError: (FaaSMLError,),
    FunctionError: (FaaSMLError,),
    ProviderError: (FaaSMLError,),
    AuthenticationError: (ProviderError,),
    PermissionDeniedError: (ProviderError,),
    NotFoundError: (ProviderError, LookupError),
    AlreadyExistsError: (ProviderError,),
    PayloadTooLargeError: (ProviderError,),
    ThrottledError: (ProviderError,),
    ServiceUnavailableError: (ProviderError,),
    InvocationTimeoutError: (ProviderError, TimeoutError),
}

#: builtins a class must NOT be, so that ``except ValueError`` etc. does not swallow it.
UNEXPECTED_BUILTINS = (
    ValueError,
    ImportError,
    KeyError,
    LookupError,
    TimeoutError,
    OSError,
    ArithmeticError,
)

RETRIABLE = {ThrottledError, ServiceUnavailableError, InvocationTimeoutError, WorkerDiedError}


def _defined_error_classes() -> list[type[FaaSMLError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, FaaSMLError) and obj.__module__ == errors.__name__
    ]


def _example(cls: type[FaaSMLError]) -> tuple[FaaSMLError, dict[str, Any]]:
    """An instance of ``cls`` with every attribute it documents set to a non-default value."""
    attrs: dict[str, Any] = {}
    if issubclass(cls, ProviderError):
        attrs.update(provider="s3", code="SlowDown", status=503, request_id="req-42")
    if issubclass(cls, ThrottledError):
        attrs["retry_after"] = 1.5
    if issubclass(cls, FunctionError):
        attrs.update(remote_type="mymod.MyError", remote_traceback="Traceback ...\nMyError: x")
    return cls(f"{cls.__name__} happened", **attrs), attrs


def test_expected_bases_cover_every_class() -> None:
    assert set(EXPECTED_BASES) == set(_defined_error_classes())


@pytest.mark.parametrize("cls", list(EXPECTED_BASES), ids=lambda c: c.__name__)
def test_bases(cls: type[FaaSMLError]) -> None:
    expected = EXPECTED_BASES[cls]
    for base in expected:
        assert issubclass(cls, base), f"{cls.__name__} must be a {base.__name__}"
    assert issubclass(cls, FaaSMLError)
    for builtin in UNEXPECTED_BUILTINS:
        if not any(issubclass(b, builtin) for b in expected):
            assert not issubclass(cls, builtin), f"{cls.__name__} must not be a {builtin}"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (NotFoundError, LookupError),
        (MissingDependencyError, ImportError),
        (UnknownBackendError, KeyError),
        (InvocationTimeoutError, TimeoutError),
        (ConfigurationError, ValueError),
        (DataFormatError, ValueError),
        (InvalidKeyError, ValueError),
    ],
)
def test_caught_by_the_builtin_a_caller_would_use(
    cls: type[FaaSMLError], builtin: type[BaseException]
) -> None:
    with pytest.raises(builtin) as info:
        raise cls("boom")
    assert type(info.value) is cls


def test_unknown_backend_error_str_is_the_message_not_a_repr() -> None:
    # KeyError.__str__ would give "'unknown provider ...'" with quotes around it.
    err = UnknownBackendError("unknown provider 'x'; choose one of: local")
    assert str(err) == "unknown provider 'x'; choose one of: local"
    assert f"{err}" == str(err)


@pytest.mark.parametrize("cls", _defined_error_classes(), ids=lambda c: c.__name__)
def test_retriable_only_where_trying_again_can_help(cls: type[FaaSMLError]) -> None:
    assert cls.retriable is (cls in RETRIABLE)
    instance, _ = _example(cls)
    assert instance.retriable is (cls in RETRIABLE)


def test_provider_error_attributes_default_to_none() -> None:
    err = NotFoundError("no such key")
    assert (err.provider, err.code, err.status, err.request_id) == (None, None, None, None)
    assert ThrottledError("slow down").retry_after is None


def test_function_error_attributes_default_to_none() -> None:
    err = FunctionError("user code failed")
    assert err.remote_type is None
    assert err.remote_traceback is None


def test_message_is_str_and_args() -> None:
    err = ServiceUnavailableError("endpoint https://x is down", provider="aws")
    assert str(err) == "endpoint https://x is down"
    assert err.message == "endpoint https://x is down"
    assert err.args == ("endpoint https://x is down",)


def test_provider_error_attributes_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ProviderError("m", "aws")  # type: ignore[misc]


@pytest.mark.parametrize("name", errors.__all__)
def test_pickles_with_attributes(name: str) -> None:
    cls = getattr(errors, name)
    original, attrs = _example(cls)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(original, protocol=protocol))
        assert type(restored) is cls
        assert str(restored) == str(original)
        assert restored.args == original.args
        for attr, value in attrs.items():
            assert getattr(restored, attr) == value, attr
        assert restored.retriable is original.retriable


def test_copy_keeps_attributes() -> None:
    err = ThrottledError("slow", retry_after=3.0, provider="aws", status=429)
    clone = copy.deepcopy(err)
    assert (clone.retry_after, clone.provider, clone.status) == (3.0, "aws", 429)


def test_pickle_keeps_extra_keyword_attributes() -> None:
    # MissingDependencyError is an ImportError: its ``name`` must survive like any attribute.
    err = MissingDependencyError('pip install "faasml[aws]"', name="boto3")
    restored = pickle.loads(pickle.dumps(err))
    assert restored.name == "boto3"
    assert isinstance(restored, ImportError)


def test_all_is_complete() -> None:
    assert set(errors.__all__) == {cls.__name__ for cls in _defined_error_classes()}


def test_all_is_sorted_and_unique() -> None:
    assert errors.__all__ == sorted(set(errors.__all__))


def test_module_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    missing = [name for name in errors.__all__ if name not in doc]
    assert not missing, f"add {missing} to the tree in faasml/errors.py's docstring"


@pytest.mark.parametrize("cls", _defined_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_is_documented(cls: type[FaaSMLError]) -> None:
    assert cls.__doc__ and cls.__doc__.strip()
