"""Decision rules of the step coordinator (pure state machine, fake clock)."""

from __future__ import annotations

import pytest

from faasml.errors import ConfigurationError
from faasml.sync import Announcement, Leave, StepCoordinator


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ann(slot: int, t: int, gen: int = 0, base: int | None = None) -> Announcement:
    return Announcement(
        slot, gen, t, f"k/{t}/{slot}-{gen}", n=10, base=t - 1 if base is None else base, loss=1.0
    )


def coordinator(mode: str = "bsp", **kw: float) -> tuple[StepCoordinator, Clock]:
    clock = Clock()
    return StepCoordinator(mode=mode, clock=clock, **kw), clock  # type: ignore[arg-type]


def test_bsp_waits_for_every_expected_member() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    c.expect(1, 0)
    assert c.on_announcement(ann(0, 0))
    assert c.decide() == []
    assert c.on_announcement(ann(1, 0))
    [d0] = c.decide()
    assert d0.d == 0
    assert [(i.slot, i.t) for i in d0.deltas] == [(0, 0), (1, 0)]
    assert d0.samples == 20 and c.samples == 20


def test_bsp_decision_only_includes_its_step() -> None:
    c, _ = coordinator("ssp", staleness=2)
    c.expect(0, 0)
    c.expect(1, 0)
    for t in range(3):
        c.on_announcement(ann(0, t))  # slot 0 runs ahead (SSP)
    c.on_announcement(ann(1, 0))
    decisions = c.decide()
    assert [d.d for d in decisions] == [0]
    assert [(i.slot, i.t) for i in decisions[0].deltas] == [(0, 0), (1, 0)]
    c.on_announcement(ann(1, 1))
    [d1] = c.decide()
    assert [(i.slot, i.t) for i in d1.deltas] == [(0, 1), (1, 1)]


def test_deltas_are_sorted_for_bit_identical_replicas() -> None:
    c, _ = coordinator()
    for slot in (2, 0, 1):
        c.expect(slot, 0)
    for slot in (2, 0, 1):
        c.on_announcement(ann(slot, 0))
    [d0] = c.decide()
    assert [i.slot for i in d0.deltas] == [0, 1, 2]


def test_duplicate_announcement_is_ignored() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    assert c.on_announcement(ann(0, 0))
    assert not c.on_announcement(ann(0, 0))
    [d0] = c.decide()
    assert len(d0.deltas) == 1
    assert not c.on_announcement(ann(0, 0))  # redelivered after the decision


def test_unknown_member_is_ignored() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    assert not c.on_announcement(ann(5, 0))


def test_silent_member_is_overdue_then_evicted_and_fenced() -> None:
    c, clock = coordinator(step_timeout=5.0, join_timeout=10.0)
    c.expect(0, 0)
    c.expect(1, 0)
    c.on_announcement(ann(0, 0))
    c.on_announcement(ann(1, 0))
    c.decide()
    clock.now = 1.0
    c.on_announcement(ann(0, 1))
    clock.now = 4.0
    assert c.overdue() == []
    clock.now = 6.0
    assert c.overdue() == [(1, 0)]
    assert c.evict(1, 0)
    [d1] = c.decide()
    assert d1.evicted == ((1, 0),)
    assert [i.slot for i in d1.deltas] == [0]
    assert not c.on_announcement(ann(1, 1))  # fenced


def test_expected_member_gets_the_join_timeout() -> None:
    c, clock = coordinator(step_timeout=1.0, join_timeout=10.0)
    c.expect(0, 0)
    clock.now = 5.0
    assert c.overdue() == []
    clock.now = 11.0
    assert c.overdue() == [(0, 0)]


def test_member_launched_mid_run_does_not_block_until_it_announces() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    c.on_announcement(ann(0, 0))
    c.decide()
    c.launched(1, 1)
    c.on_announcement(ann(0, 1))
    assert [d.d for d in c.decide()] == [1]  # slot 1 gen 1 is not awaited yet
    c.on_announcement(ann(1, 1, gen=1))  # late: step 1 was decided without it
    c.on_announcement(ann(0, 2))
    assert c.decide() == []  # from its first announcement on, slot 1 is required
    c.on_announcement(ann(1, 2, gen=1))
    [d2] = c.decide()
    # the late delta rides along with the current decision instead of being dropped
    assert [(i.slot, i.t) for i in d2.deltas] == [(0, 2), (1, 1), (1, 2)]


def test_leave_and_death_keep_announced_deltas() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    c.expect(1, 0)
    c.on_announcement(ann(0, 0))
    c.on_announcement(ann(1, 0))
    c.decide()
    c.on_announcement(ann(1, 1))
    c.on_leave(Leave(1, 0, next_t=2, reason="budget"))
    assert c.on_gone(0, 0)  # slot 0 died without announcing step 1
    [d1] = c.decide()
    assert [(i.slot, i.t) for i in d1.deltas] == [(1, 1)]
    assert not c.on_gone(0, 0)
    assert c.live_members() == []
    assert c.decide() == []  # nothing pending, nobody left: no empty decisions


def test_asp_decides_whatever_arrived() -> None:
    c, _ = coordinator("asp")
    c.expect(0, 0)
    c.expect(1, 0)
    c.on_announcement(ann(0, 0))
    c.on_announcement(ann(0, 1))
    [d0] = c.decide()
    assert [(i.slot, i.t) for i in d0.deltas] == [(0, 0), (0, 1)]
    assert c.decide() == []
    c.on_announcement(ann(1, 0))
    assert [len(d.deltas) for d in c.decide()] == [1]


def test_stop_is_final_and_empty() -> None:
    c, _ = coordinator()
    c.expect(0, 0)
    c.on_announcement(ann(0, 0))
    c.decide()
    final = c.stop()
    assert final.stop and final.d == 1 and final.deltas == ()
    assert not c.on_announcement(ann(0, 1))
    assert c.decide() == []


def test_last_t_tracks_the_slot_over_generations() -> None:
    c, _ = coordinator("asp")
    c.expect(0, 0)
    assert c.last_t(0) == -1
    c.on_announcement(ann(0, 4))
    c.on_gone(0, 0)
    c.launched(0, 1)
    assert c.last_t(0) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "gossip"}, "sync mode"),
        ({"staleness": -1}, "staleness"),
        ({"step_timeout": 0}, "timeout"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        StepCoordinator(**kwargs)  # type: ignore[arg-type]


def test_waiting_for_a_slow_peer_does_not_make_a_member_overdue() -> None:
    c, clock = coordinator(step_timeout=5.0)
    c.expect(0, 0)
    c.expect(1, 0)
    c.on_announcement(ann(0, 0))
    c.on_announcement(ann(1, 0))
    c.decide()
    c.on_announcement(ann(0, 1))  # slot 0 is on time; slot 1 stalls
    clock.now = 6.0
    assert c.overdue() == [(1, 0)]
    c.evict(1, 0)
    c.decide()
    clock.now = 6.5  # slot 0 announced 6.5 s ago, but step 2 only opened 0.5 s ago
    assert c.overdue() == []
    clock.now = 11.1
    assert c.overdue() == [(0, 0)]
