"""Helpers shared by the PubSub backends.

* :func:`message_bytes`: the one check that a published message is bytes;
* :func:`encode_body` and :func:`decode_body`: bytes as the text bodies of SNS/SQS, MNS and SMN,
  standard base64, with the empty payload as ``"="`` (those services refuse empty messages, and
  no base64 encoding of data is a lone ``=``);
* :func:`own_receipts`: the messages of a batch that one subscription can settle together;
* :func:`name_digest`: the hash that keeps names apart once they were shortened or rewritten to
  fit a service's naming rules (SQS queues, MNS topics and queues).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import Any

from faasml.interfaces import Message

__all__ = [
    "EMPTY_BODY",
    "decode_body",
    "encode_body",
    "message_bytes",
    "name_digest",
    "own_receipts",
]

#: the body that carries the empty payload.
EMPTY_BODY = "="


def message_bytes(data: object) -> bytes:
    """Return ``data`` as ``bytes`` (copying a ``bytearray`` or ``memoryview``).

    :raises TypeError: ``data`` is not bytes-like.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"message data must be bytes, got {type(data).__name__}")


def encode_body(data: bytes) -> str:
    """``data`` as a text body: standard base64, or :data:`EMPTY_BODY` for ``b""``."""
    return base64.b64encode(data).decode("ascii") or EMPTY_BODY


def decode_body(body: str | bytes) -> bytes:
    """Invert :func:`encode_body`.

    A body that is not valid base64 was not written by faasml (another client, a console):
    its UTF-8 bytes are handed over as they are.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    if text == EMPTY_BODY:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode("utf-8")


def name_digest(*names: str, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``names``.

    Names cannot contain a newline, so joining them with one keeps ``("a", "bc")`` and
    ``("ab", "c")`` apart.
    """
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()[:length]


def own_receipts(messages: Iterable[Message], owner: object) -> list[tuple[Message, Any]]:
    """Split a batch for :meth:`~faasml.interfaces.Subscription.ack_many`.

    Backends that settle batches give each message the receipt ``(owner, handle)``. Returns
    ``(message, handle)`` for the un-acked messages ``owner`` delivered, in order; every other
    un-acked message is acked on its own here.
    """
    mine: list[tuple[Message, Any]] = []
    for message in messages:
        if message.acked:
            continue
        receipt = message.receipt
        if isinstance(receipt, tuple) and len(receipt) == 2 and receipt[0] is owner:
            mine.append((message, receipt[1]))
        else:
            message.ack()
    return mine
