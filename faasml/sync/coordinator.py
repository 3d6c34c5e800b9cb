"""The driver's step-decision rules for BSP, SSP and ASP, as a pure state machine (no I/O).

Workers announce one delta per step ``t``; the coordinator turns announcements into a totally
ordered sequence of *decisions* ``d = 0, 1, 2, ...``, each listing exactly which deltas every
replica adds. Because every replica (each worker's and the driver's) applies the same decisions in
the same order, replicas stay bit-identical however the workers interleave.

Rules for decision ``d``:

* **BSP / SSP** -- decision ``d`` waits until every *required* member has announced a step
  ``>= d`` (or has left, died, or been evicted). It then includes every pending announcement with
  ``t <= d``: normally exactly one per member; a late one (a member that joined mid-run) rides
  along with the current decision rather than being dropped. The difference between BSP and SSP
  is on the worker side only: under SSP a worker may compute step ``t`` once decision
  ``t - 1 - staleness`` is applied, instead of ``t - 1``.
* **ASP** -- nothing waits: each decision includes whatever announcements are pending.

Membership: the initial cohort is *expected* (required from the start, evicted if it does not
announce within ``join_timeout``); a member launched mid-run (a replacement or the next
generation of a slot) becomes required with its first announcement, so a slow start never
stalls the others. A required member that stays silent for ``step_timeout`` while a decision
waits for it (counted from the later of its last announcement and the previous decision) is
evicted: the next decision names it in ``evicted`` and it must stop; its later
announcements are ignored (fencing by generation). A member that died or left loses nothing it
had already announced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faasml.errors import ConfigurationError
from faasml.sync.messages import Announcement, Decision, Included, Leave

__all__ = ["SYNC_MODES", "MemberState", "StepCoordinator"]

#: the accepted ``sync=`` modes.
SYNC_MODES = ("bsp", "ssp", "asp")

Member = tuple[int, int]


@dataclass
class MemberState:
    """What the coordinator knows about one (slot, generation).

    :param required: decisions wait for it (BSP/SSP).
    :param max_t: highest step it announced (-1: none yet).
    :param last_seen: clock time of its last announcement (or of its launch).
    :param status: ``"launched"``, ``"active"``, ``"left"``, ``"gone"`` or ``"evicted"``.
    """

    slot: int
    gen: int
    required: bool
    last_seen: float
    max_t: int = -1
    status: str = "launched"
    announced: int = 0


@dataclass
class StepCoordinator:
    """Decide steps from announcements; see the module docstring for the rules.

    :param mode: ``"bsp"``, ``"ssp"`` or ``"asp"``.
    :param staleness: SSP bound (recorded for auditing; enforced by the workers).
    :param step_timeout: seconds a required member may stay silent while a decision waits for it.
    :param join_timeout: seconds an expected member has to announce its first step.
    :param clock: time source (monotonic seconds); injectable for tests.
    """

    mode: str = "bsp"
    staleness: int = 0
    step_timeout: float = 60.0
    join_timeout: float = 120.0
    clock: Callable[[], float] = time.monotonic
    next_d: int = 0
    members: dict[Member, MemberState] = field(default_factory=dict)
    pending: list[Announcement] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    samples: int = 0
    stopped: bool = False
    _evict_next: list[Member] = field(default_factory=list)
    _decided_at: float = float("-inf")

    def __post_init__(self) -> None:
        if self.mode not in SYNC_MODES:
            raise ConfigurationError(f"unknown sync mode {self.mode!r}; use one of {SYNC_MODES}")
        if self.staleness < 0:
            raise ConfigurationError(f"staleness must be >= 0, got {self.staleness}")
        if self.step_timeout <= 0 or self.join_timeout <= 0:
            raise ConfigurationError("step_timeout and join_timeout must be > 0")

    # ------------------------------------------------------------------ membership

    def expect(self, slot: int, gen: int) -> None:
        """Register a member that decisions wait for from the start (the initial cohort)."""
        self.members[(slot, gen)] = MemberState(slot, gen, required=True, last_seen=self.clock())

    def launched(self, slot: int, gen: int) -> None:
        """Register a member launched mid-run; it becomes required with its first announcement."""
        self.members[(slot, gen)] = MemberState(slot, gen, required=False, last_seen=self.clock())

    def live_members(self) -> list[Member]:
        """Members launched or active (not left, gone or evicted)."""
        return [m for m, s in self.members.items() if s.status in ("launched", "active")]

    def last_t(self, slot: int) -> int:
        """Highest step any generation of ``slot`` announced (-1: none)."""
        return max((s.max_t for (sl, _), s in self.members.items() if sl == slot), default=-1)

    def on_announcement(self, ann: Announcement) -> bool:
        """Record an announcement; return whether it was accepted.

        Announcements of unknown, evicted, departed members or after the stop are ignored, as are
        duplicates (pubsub may redeliver).
        """
        state = self.members.get((ann.slot, ann.gen))
        if self.stopped or state is None or state.status in ("evicted", "gone", "left"):
            return False
        if ann.t <= state.max_t:
            return False  # a member's steps only grow: this is a redelivered duplicate
        state.max_t = ann.t
        state.last_seen = self.clock()
        state.status = "active"
        state.required = True
        state.announced += 1
        self.pending.append(ann)
        return True

    def on_leave(self, leave: Leave) -> None:
        """A member stopped on its own (time budget used up, training over, fenced off)."""
        state = self.members.get((leave.slot, leave.gen))
        if state is not None and state.status in ("launched", "active"):
            state.status = "left"
            state.required = False

    def on_gone(self, slot: int, gen: int) -> bool:
        """A member's invocation ended (crash, or it returned); return whether it was live."""
        state = self.members.get((slot, gen))
        if state is None or state.status not in ("launched", "active"):
            return False
        state.status = "gone"
        state.required = False
        return True

    def evict(self, slot: int, gen: int) -> bool:
        """Fence a member off; the next decision tells it to stop. Return whether it was live."""
        state = self.members.get((slot, gen))
        if state is None or state.status not in ("launched", "active"):
            return False
        state.status = "evicted"
        state.required = False
        self._evict_next.append((slot, gen))
        return True

    # ------------------------------------------------------------------ decisions

    def blocking(self) -> list[MemberState]:
        """Required members the next decision waits for (none under ASP)."""
        if self.mode == "asp":
            return []
        return [
            s
            for s in self.members.values()
            if s.required and s.status in ("launched", "active") and s.max_t < self.next_d
        ]

    def overdue(self) -> list[Member]:
        """Blocking members silent for longer than their timeout (to be evicted)."""
        now = self.clock()
        out = []
        for s in self.blocking():
            limit = self.join_timeout if s.status == "launched" else self.step_timeout
            # silent since its last announcement *and* since the step it is awaited for opened:
            # a member that waited for a slow peer is not at fault for that wait
            if now - max(s.last_seen, self._decided_at) > limit:
                out.append((s.slot, s.gen))
        return out

    def decide(self, limit: int | None = None) -> list[Decision]:
        """Make the decisions that are ready now (possibly none), in order, at most ``limit``."""
        made: list[Decision] = []
        while not self.stopped and (limit is None or len(made) < limit):
            dec = self._decide_one()
            if dec is None:
                break
            made.append(dec)
        return made

    def _decide_one(self) -> Decision | None:
        d = self.next_d
        if self.blocking():
            return None
        if self.mode == "asp":
            chosen = list(self.pending)
        else:
            chosen = [a for a in self.pending if a.t <= d]
        if not chosen and not self._evict_next:
            if not self.pending:
                return None
            # only announcements for later steps are pending and nobody is awaited: an empty
            # decision moves the step forward so they can be decided next
        taken = {id(a) for a in chosen}
        self.pending = [a for a in self.pending if id(a) not in taken]
        chosen.sort(key=lambda a: (a.slot, a.gen, a.t))
        decision = Decision(d, tuple(a.included() for a in chosen), evicted=tuple(self._evict_next))
        self._evict_next = []
        self.decisions.append(decision)
        self.samples += decision.samples
        self.next_d = d + 1
        self._decided_at = self.clock()
        return decision

    def stop(self) -> Decision:
        """Make the final, empty decision with ``stop=True``; later announcements are ignored."""
        decision = Decision(self.next_d, (), evicted=tuple(self._evict_next), stop=True)
        self._evict_next = []
        self.decisions.append(decision)
        self.next_d += 1
        self.stopped = True
        return decision

    def included(self) -> list[Included]:
        """Every delta decided so far, in decision order (for auditing)."""
        return [inc for dec in self.decisions for inc in dec.deltas]
