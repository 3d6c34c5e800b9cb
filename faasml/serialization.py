"""Serialization of tasks and results: cloudpickle, adaptive compression, HMAC-SHA256 envelopes.

Every blob that crosses the function boundary (task payloads, stored functions and arguments,
results, completion messages) is wrapped in a signed envelope::

    b"FML1" | flags (1 byte) | HMAC-SHA256 over flags+body (32 bytes) | body

The receiver verifies the MAC before it unpickles anything, so a blob modified in the store or
forged by someone without the secret is refused (:class:`~faasml.errors.SignatureError`) instead
of being executed.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import sys
import sysconfig
import types
import zlib
from typing import Any

import cloudpickle

from faasml.errors import SerializationError, SignatureError

__all__ = ["dumps", "loads", "register_local_modules", "seal", "unseal"]

_MAGIC = b"FML1"
_HEADER = len(_MAGIC) + 1 + 32
_FLAG_ZLIB = 0x01
# Compress only what is worth it: sample the start of the blob and keep zlib only when the sample
# shrinks well. Random floats (model weights, matrices) do not compress and zlib would cost ~10 ms
# per MiB for nothing.
_COMPRESS_MIN = 4096
_SAMPLE = 8 * 1024
_GOOD_RATIO = 0.6


def dumps(obj: Any, *, what: str = "value") -> bytes:
    """Serialize ``obj`` with cloudpickle (protocol 5).

    :raises SerializationError: ``obj`` cannot be pickled; the message names ``what`` and why.
    """
    try:
        data: bytes = cloudpickle.dumps(obj, protocol=5)
        return data
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what}: {type(exc).__name__}: {exc}. Functions and arguments must "
            "be picklable by cloudpickle (no open files, locks, sockets or generators)"
        ) from exc


def loads(data: bytes | memoryview, *, what: str = "value") -> Any:
    """Deserialize what :func:`dumps` produced.

    :raises SerializationError: the data cannot be unpickled here (e.g. a missing module).
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"cannot deserialize {what}: {type(exc).__name__}: {exc}") from exc


def seal(body: bytes, secret: bytes, *, compress: bool = True) -> bytes:
    """Return ``body`` wrapped in a signed (and, when worth it, compressed) envelope."""
    flags = 0
    if compress and len(body) >= _COMPRESS_MIN:
        sample = body[:_SAMPLE]
        if len(zlib.compress(sample, 1)) < _GOOD_RATIO * len(sample):
            body = zlib.compress(body, 1)
            flags |= _FLAG_ZLIB
    flag_byte = bytes([flags])
    mac = hmac.new(secret, flag_byte, hashlib.sha256)
    mac.update(body)
    out = io.BytesIO()
    out.write(_MAGIC)
    out.write(flag_byte)
    out.write(mac.digest())
    out.write(body)
    return out.getvalue()


def unseal(blob: bytes | memoryview, secret: bytes, *, what: str = "payload") -> bytes:
    """Verify and open an envelope made by :func:`seal`.

    :raises SignatureError: the blob is not an envelope, or its MAC does not match ``secret``.
    """
    view = memoryview(blob)
    if len(view) < _HEADER or bytes(view[:4]) != _MAGIC:
        raise SignatureError(
            f"{what} is not a signed faasml envelope: refused. It was written by something else "
            "or truncated"
        )
    flag_byte = bytes(view[4:5])
    body = view[_HEADER:]
    mac = hmac.new(secret, flag_byte, hashlib.sha256)
    mac.update(body)
    if not hmac.compare_digest(mac.digest(), bytes(view[5:_HEADER])):
        raise SignatureError(
            f"{what} failed HMAC-SHA256 verification: refused. It was modified after signing, or "
            "the driver and the function use different secrets (check FAASML_SECRET)"
        )
    if flag_byte[0] & _FLAG_ZLIB:
        return zlib.decompress(body)
    return bytes(body)


def _site_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _is_local_module(module: types.ModuleType) -> bool:
    """True for a user's own module that a remote worker probably cannot import."""
    name = module.__name__
    if name == "__main__" or name.split(".")[0] in ("faasml", "cloudpickle"):
        return False
    path = getattr(module, "__file__", None)
    if not path:
        return False  # builtin or namespace module
    return not os.path.realpath(path).startswith(_site_dirs())


def register_local_modules(obj: Any) -> None:
    """Ship by value the user's own module that defines ``obj`` (and its top-level package).

    Installed packages are pickled by reference as usual; a script's sibling ``helpers.py`` is
    not installed on the platform, so it travels inside the payload instead.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or not _is_local_module(module):
        return
    root = sys.modules.get(module.__name__.split(".")[0], module)
    target = root if _is_local_module(root) else module
    try:
        cloudpickle.register_pickle_by_value(target)
    except ValueError:
        pass  # already registered, or not importable by name: cloudpickle falls back by itself
