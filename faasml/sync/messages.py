"""Messages of the sync protocol and the object-key layout of a training run.

Messages travel as JSON (never pickle: anyone able to publish on a topic must not be able to run
code in a worker). Keys of one run all live under ``<prefix>/<run>/``::

    active                       exists while the run is going on (a late invocation finds it gone)
    claims/<slot>-<gen>          write-once marker: the first invocation of (slot, gen) owns it
    deltas/<t>-<slot>-<gen>      a worker's sparse delta for its step t
    decisions/<d>                the driver's decision d (the replay log for joining workers)
    ckpt/<d>                     the model after decision d; ckpt/latest holds the newest d
    state/<slot>                 optimizer state a slot hands from one generation to the next
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from faasml.errors import DataFormatError
from faasml.interfaces import validate_key

__all__ = [
    "Announcement",
    "Decision",
    "Included",
    "Leave",
    "RunKeys",
    "decode_message",
]


@dataclass(frozen=True)
class RunKeys:
    """Object keys and topic names of one training run.

    :param prefix: store prefix of the run, e.g. ``"train/3f2a..."``.
    :param run: the run id (also names the topics).
    """

    prefix: str
    run: str

    def __post_init__(self) -> None:
        validate_key(self.prefix)

    @property
    def up_topic(self) -> str:
        """Workers -> driver (one group: the driver)."""
        return f"fml-{self.run}-up"

    @property
    def down_topic(self) -> str:
        """Driver -> workers (fan-out: each worker subscribes with its own private group)."""
        return f"fml-{self.run}-dn"

    @property
    def active(self) -> str:
        """Marker the driver keeps while the run goes on, deleted when it ends."""
        return f"{self.prefix}/active"

    def claim(self, slot: int, gen: int) -> str:
        """Write-once marker of invocation (slot, gen)."""
        return f"{self.prefix}/claims/{slot}-{gen}"

    def delta(self, t: int, slot: int, gen: int) -> str:
        """Delta of (slot, gen) for its step ``t``."""
        # flat (no directory per step): file-like stores would otherwise create one every step
        return f"{self.prefix}/deltas/{t:09d}-{slot}-{gen}"

    def decision(self, d: int) -> str:
        """Stored copy of decision ``d``."""
        return f"{self.prefix}/decisions/{d:09d}"

    def checkpoint(self, d: int) -> str:
        """Model checkpoint after decision ``d``."""
        return f"{self.prefix}/ckpt/{d:09d}"

    @property
    def latest_checkpoint(self) -> str:
        """Small object holding the newest checkpoint's decision number."""
        return f"{self.prefix}/ckpt/latest"

    def state(self, slot: int) -> str:
        """Optimizer state a slot hands to its next generation."""
        return f"{self.prefix}/state/{slot}"


@dataclass(frozen=True)
class Included:
    """One delta included in a decision.

    :param slot: the worker slot.
    :param gen: the slot's generation.
    :param t: the worker's step the delta was computed at.
    :param key: object key of the delta, ``None`` when nothing was significant enough to send.
    :param n: samples in the minibatch.
    :param base: the last decision applied to the replica the gradient was computed on.
    """

    slot: int
    gen: int
    t: int
    key: str | None
    n: int
    base: int

    @property
    def member(self) -> tuple[int, int]:
        """``(slot, gen)``."""
        return (self.slot, self.gen)


@dataclass(frozen=True)
class Announcement:
    """Worker -> driver: "my delta for step ``t`` is stored under ``key``".

    :param loss: mean training loss of the minibatch, before the update.
    :param rows: rows the delta changes.
    """

    slot: int
    gen: int
    t: int
    key: str | None
    n: int
    base: int
    loss: float
    rows: int = 0
    type: str = field(default="delta", init=False)

    def included(self) -> Included:
        """The :class:`Included` record a decision carries for this announcement."""
        return Included(self.slot, self.gen, self.t, self.key, self.n, self.base)

    def encode(self) -> bytes:
        """JSON bytes."""
        # spelled out: dataclasses.asdict deep-copies every field, a third of the message's cost
        return json.dumps(
            {
                "slot": self.slot,
                "gen": self.gen,
                "t": self.t,
                "key": self.key,
                "n": self.n,
                "base": self.base,
                "loss": self.loss,
                "rows": self.rows,
                "type": self.type,
            }
        ).encode()


@dataclass(frozen=True)
class Leave:
    """Worker -> driver: (slot, gen) stops; its next step would have been ``next_t``.

    :param reason: ``"budget"`` (generation time used up: launch the next one), ``"stopped"``
        (training ended), ``"evicted"`` (the driver fenced it off) or ``"error"``.
    """

    slot: int
    gen: int
    next_t: int
    reason: str
    type: str = field(default="leave", init=False)

    def encode(self) -> bytes:
        """JSON bytes."""
        return json.dumps(asdict(self)).encode()


@dataclass(frozen=True)
class Decision:
    """Driver -> workers: decision ``d`` applies exactly ``deltas``, in that order.

    :param d: the decision number (0, 1, 2 ...); replicas apply decisions in this order.
    :param deltas: the included deltas, sorted by (slot, gen, t) so every replica adds them in the
        same order and ends bit-identical.
    :param evicted: members fenced off at this decision: they must stop at once.
    :param stop: training ends with this decision.
    """

    d: int
    deltas: tuple[Included, ...]
    evicted: tuple[tuple[int, int], ...] = ()
    stop: bool = False
    type: str = field(default="decision", init=False)

    @property
    def samples(self) -> int:
        """Samples behind the included deltas."""
        return sum(inc.n for inc in self.deltas)

    def encode(self) -> bytes:
        """JSON bytes (also the stored form)."""
        return json.dumps(
            {
                "type": "decision",
                "d": self.d,
                "deltas": [[i.slot, i.gen, i.t, i.key, i.n, i.base] for i in self.deltas],
                "evicted": [list(m) for m in self.evicted],
                "stop": self.stop,
            }
        ).encode()


Message = Announcement | Leave | Decision


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse a protocol message.

    :raises DataFormatError: not JSON or not a known message.
    """
    try:
        obj: dict[str, Any] = json.loads(bytes(data))
        kind = obj.pop("type")
        if kind == "delta":
            return Announcement(
                slot=int(obj["slot"]),
                gen=int(obj["gen"]),
                t=int(obj["t"]),
                key=None if obj["key"] is None else str(obj["key"]),
                n=int(obj["n"]),
                base=int(obj["base"]),
                loss=float(obj["loss"]),
                rows=int(obj.get("rows", 0)),
            )
        if kind == "leave":
            return Leave(int(obj["slot"]), int(obj["gen"]), int(obj["next_t"]), str(obj["reason"]))
        if kind == "decision":
            deltas = tuple(
                Included(int(s), int(g), int(t), None if k is None else str(k), int(n), int(b))
                for s, g, t, k, n, b in obj["deltas"]
            )
            evicted = tuple((int(s), int(g)) for s, g in obj["evicted"])
            return Decision(int(obj["d"]), deltas, evicted, bool(obj["stop"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"invalid sync message: {exc}") from None
    raise DataFormatError(f"unknown sync message type {kind!r}")
