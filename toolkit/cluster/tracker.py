"""The run's ledger and progress: one small actor that outlives any worker.

Ray retries the work of a worker process or node that dies, from the start of the task or
batch. The ledger makes that retry cheap and harmless: an input whose result is recorded is
not done again (its files are not written a second time), and each input's result is
delivered to the driver exactly once, however many attempts it took. The only input a retry
writes again is one whose worker died between publishing its files and recording them (a
window of a few milliseconds); its files are replaced atomically by identical bytes.

Progress: workers report frames per input as an absolute count (a retried video counts from
zero again without inflating the total, since the ledger keeps each input's maximum), and the
driver polls :meth:`Tracker.drain` to move the same progress bar a local run moves.

Inputs that kill their worker (a file that crashes a decoder) would be retried forever; the
ledger counts the attempts at each input whose worker died and gives one up after
:data:`MAX_ATTEMPTS`, as a failure of that input alone.

The actor is pinned to the driver's node, so it dies only with the driver's own machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from toolkit.matting.batch import ItemResult, SilentReporter

#: How often a worker sends a video's frame count (seconds); the bar refreshes about as often.
PROGRESS_INTERVAL = 0.25
#: Attempts at one input whose worker died before it is given up as failing on its own merits
#: (an input that crashes the decoder kills every worker that tries it).
MAX_ATTEMPTS = 3


class Tracker:
    """Results by input key, frames by input key, and which results the driver has not seen."""

    def __init__(self) -> None:
        self._results: dict[int, ItemResult] = {}
        self._frames: dict[int, int] = {}
        self._fresh: list[int] = []
        self._attempts: dict[int, int] = {}

    def begin(self, keys: list[int]) -> dict[int, int]:
        """Count a new attempt at each of ``keys`` not yet done; return every count.

        Ray retries a dead worker's work without limit (a node can take many seconds to be
        declared dead); these counts are what stops an input that itself kills its worker.
        """
        counts = {}
        for key in keys:
            if key not in self._results:
                self._attempts[key] = self._attempts.get(key, 0) + 1
                counts[key] = self._attempts[key]
        return counts

    def record(self, key: int, result: ItemResult) -> bool:
        """Keep the first result for ``key``; False if one was already recorded."""
        if key in self._results:
            return False
        self._results[key] = result
        self._frames[key] = max(self._frames.get(key, 0), result.frames, 1)
        self._fresh.append(key)
        return True

    def progress(self, key: int, frames: int) -> None:
        self._frames[key] = max(self._frames.get(key, 0), frames)

    def drain(self) -> tuple[list[tuple[int, ItemResult]], int]:
        """The results recorded since the last call, and the frames done so far."""
        fresh, self._fresh = self._fresh, []
        return [(k, self._results[k]) for k in fresh], sum(self._frames.values())


def start_tracker(ray: Any) -> Any:
    """Start the tracker actor on this (the driver's) node; return its handle."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=0)(Tracker)
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    ).remote()


class TrackerReporter(SilentReporter):
    """A worker-side reporter for one video: its frame count goes to the tracker, a few times
    a second (fire-and-forget; the last count is also in the recorded result)."""

    def __init__(self, tracker: Any, key: int) -> None:
        self._tracker = tracker
        self._key = key
        self._frames = 0
        self._sent = 0.0
        self._lock = threading.Lock()

    def advance(self, frames: int = 1) -> None:
        with self._lock:
            self._frames += frames
            now = time.monotonic()
            if now - self._sent >= PROGRESS_INTERVAL:
                self._sent = now
                self._tracker.progress.remote(self._key, self._frames)
