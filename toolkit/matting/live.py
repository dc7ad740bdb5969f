"""Live sources: keep the latest frame, drop the ones that arrive while the network is busy.

A camera delivers frames at its own rate whether or not anyone is ready for them. Queueing
them (what a file reader does) makes the delay from camera to output grow by one frame
interval for every frame the network falls behind: after a minute at 25 frames/s against a
network doing 10, the output would be 90 seconds late. Live-matting tools (virtual backgrounds,
OBS filters) instead keep only the newest frame: the network always works on what the camera
sees now, and the frames that arrived meanwhile are dropped and counted.

:class:`LatestFrame` reads a source in a thread into a one-frame slot (a new frame replaces an
unread one, which counts as dropped). A video file can be read *as* a live camera
(``pace=True``): its frames are released at the file's frame rate, which is how the tests feed
a source faster than the network. Each frame carries its sequence number and the moment it
arrived, so the consumer can measure latency and the order is checkable.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class LiveFrame:
    """One frame as it arrived: its index in the source, its arrival time (perf_counter)."""

    index: int
    arrived: float
    image: U8Image


@dataclass
class LiveStats:
    """What happened to a live source: frames seen, dropped, and each output's latency."""

    arrived: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def processed(self) -> int:
        return len(self.latencies_ms)

    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.processed / elapsed if elapsed > 0 else 0.0

    def latency_median(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    def latency_max(self) -> float | None:
        return max(self.latencies_ms) if self.latencies_ms else None

    def progress(self) -> str:
        """The progress line's text: frames/s and the latency of the last output."""
        last = self.latencies_ms[-1] if self.latencies_ms else 0.0
        return f"{self.fps():.1f} frames/s, latency {last:.0f} ms, {self.dropped} dropped"

    def summary(self) -> str:
        med, worst = self.latency_median(), self.latency_max()
        lat = f"latency median {med:.0f} ms, max {worst:.0f} ms" if med is not None else "no output"
        return (
            f"live: {self.processed} of {self.arrived} frames matted, {self.dropped} dropped "
            f"while busy; {lat}"
        )


class LatestFrame:
    """Iterate the newest frame of ``source``; frames not taken before the next arrives are
    dropped (and counted in ``stats``).

    ``fps`` paces the source (a file read as if it were a camera: frame i is released at
    ``i / fps`` seconds); None reads as fast as the source delivers (a real camera blocks in
    its read until the next frame). Iteration ends when the source ends and the last frame
    was taken; :meth:`close` stops the reading thread early.
    """

    def __init__(self, source: Iterable[U8Image], fps: float | None = None) -> None:
        self.stats = LiveStats()
        self._source = source
        self._fps = fps
        self._slot: LiveFrame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="modnet-live", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        start = time.perf_counter()
        try:
            for index, image in enumerate(self._source):
                if self._stop.is_set():
                    break
                if self._fps:
                    delay = start + index / self._fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                frame = LiveFrame(index, time.perf_counter(), image)
                with self._cond:
                    self.stats.arrived += 1
                    if self._slot is not None:
                        self.stats.dropped += 1  # the network was busy: never queue behind it
                    self._slot = frame
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[LiveFrame]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._ended)
                frame, self._slot = self._slot, None
                if frame is None:
                    if self._error is not None:
                        raise self._error
                    return
            yield frame

    def done(self, frame: LiveFrame) -> None:
        """Record that ``frame``'s result is out (its latency: arrival to now)."""
        self.stats.latencies_ms.append(1000.0 * (time.perf_counter() - frame.arrived))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
