"""Parameter synchronization over an ObjectStore and a PubSub, without a parameter server.

The model is **replicated**: every worker and the driver hold the full weights, identically
initialized. Each step a worker stores its sparse *delta* in the object store and announces it on
PubSub; the driver (the user's own process, like MLLess' supervisor) decides which deltas make up
each step and broadcasts that decision; every replica applies exactly the decided deltas, in
decision order, so replicas stay bit-identical. BSP, SSP (bounded staleness) and ASP differ only
in when a decision is made and how far ahead a worker may run.

Workers live within a time budget and hand over to the next generation of their slot; the
driver checkpoints its replica so a (re)joining worker loads the newest checkpoint and replays the
short decision log after it. ``(slot, generation)`` claims drop duplicate invocations, and a dead
worker loses at most its in-flight delta, never the model.

Modules: :mod:`~faasml.sync.messages` (wire format, key layout), :mod:`~faasml.sync.codec`
(binary deltas and checkpoints), :mod:`~faasml.sync.coordinator` (decision rules, pure),
:mod:`~faasml.sync.replica`, :mod:`~faasml.sync.worker`, :mod:`~faasml.sync.driver`.
"""

from __future__ import annotations

from faasml.sync.codec import decode_arrays, decode_delta, encode_arrays, encode_delta
from faasml.sync.coordinator import SYNC_MODES, MemberState, StepCoordinator
from faasml.sync.driver import SyncDriver, WorkerRecord
from faasml.sync.messages import (
    Announcement,
    Decision,
    Included,
    Leave,
    RunKeys,
    decode_message,
)
from faasml.sync.replica import AGGREGATIONS, Replica, RunningAverage
from faasml.sync.worker import SyncWorker

__all__ = [
    "AGGREGATIONS",
    "SYNC_MODES",
    "Announcement",
    "Decision",
    "Included",
    "Leave",
    "MemberState",
    "Replica",
    "RunKeys",
    "RunningAverage",
    "StepCoordinator",
    "SyncDriver",
    "SyncWorker",
    "WorkerRecord",
    "decode_arrays",
    "decode_delta",
    "decode_message",
    "encode_arrays",
    "encode_delta",
]
