"""Overlapping the stages of a run: a producer thread that works ahead of its consumer.

Decoding (Pillow, FFmpeg), inference (OpenVINO) and encoding all release the GIL, so a plain
thread gives real overlap; a bounded buffer keeps a fast producer from filling memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")


def prefetch(source: Iterable[T], depth: int) -> Generator[T, None, None]:
    """Iterate ``source`` in a background thread, ``depth`` items ahead of the consumer.

    Exceptions raised by the source are re-raised in the consumer. If the consumer stops
    early, the thread notices within a fraction of a second and ends.
    """
    buffer: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for value in source:
                if not put(("item", value)):
                    return
        except BaseException as exc:
            put(("error", exc))
            return
        put(("end", None))

    thread = threading.Thread(target=produce, name="modnet-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)
