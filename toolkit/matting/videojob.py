"""One video or camera through a session: decode, matte, composite and encode every output.

The stages overlap as for images: a thread decodes ahead (:func:`prefetch`), the session keeps
several inference requests in flight, and one encoding thread writes the outputs in order.
Each output frame is written with its input frame's timestamp, and the audio packets that came
with the input frame go into every output that shows the picture (composite, side-by-side,
cut-out), so sound stays in step without being re-encoded. The matte video has no audio.

Every writer is opened before the first frame is decoded and publishes its file only when the
whole video went through; any failure (an encoder that refuses the size, a full disk, Ctrl-C)
leaves nothing at the final paths and earlier results untouched.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from toolkit.matting.camera import CameraReader
from toolkit.matting.live import LatestFrame, LiveFrame, LiveStats
from toolkit.matting.overlap import prefetch
from toolkit.matting.prepost import (
    Background,
    OneFrameDelay,
    composite,
    cutout,
    grey_to_bgr,
    quantize_alpha,
    side_by_side,
)
from toolkit.matting.session import MattingSession
from toolkit.matting.video import TimedFrame, VideoReader
from toolkit.matting.videowriter import (
    RGBA_FORMATS,
    Encoding,
    PngSequenceWriter,
    VideoCodec,
    VideoWriter,
    audio_needs_reencode,
    plan_encoding,
)

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
Reader = VideoReader | CameraReader
Writer = VideoWriter | PngSequenceWriter


@dataclass(frozen=True)
class VideoSettings:
    """How a video is written: codec and quality, audio, the cut-out's format, background."""

    codec: VideoCodec
    crf: int | None
    audio: bool = True
    #: ``webm``, ``mov`` or ``png`` for a transparent cut-out (``files["rgba"]``), else None.
    rgba_format: str | None = None
    background: Background | None = None
    ofd: bool = False
    ofd_tolerance: float = 0.1
    png_compression: int = 1


class Progress(Protocol):
    """What the runner reports to (``status`` is optional: the live mode's line)."""

    def advance(self, frames: int = 1) -> None: ...


class LiveSource:
    """Frames taken as a camera delivers them (:class:`~toolkit.matting.live.LatestFrame`: the
    newest one, the others dropped while the network is busy) with their timestamps kept; a
    dropped frame's audio goes with the next frame taken, so the sound stays whole."""

    def __init__(self, frames: Iterator[TimedFrame], pace: float | None) -> None:
        self._lock = threading.Lock()
        self._by_index: dict[int, TimedFrame] = {}
        self.latest = LatestFrame(self._images(frames), pace)
        self.stats: LiveStats = self.latest.stats

    def _images(self, frames: Iterator[TimedFrame]) -> Iterator[U8Image]:
        for index, timed in enumerate(frames):  # LatestFrame numbers them the same way
            with self._lock:
                self._by_index[index] = timed
            yield timed.image

    def __iter__(self) -> Iterator[tuple[TimedFrame, LiveFrame]]:
        for arrived in self.latest:
            with self._lock:
                indexes = sorted(i for i in self._by_index if i <= arrived.index)
                taken = [self._by_index.pop(i) for i in indexes]
            timed = taken[-1]
            timed.audio = [packet for frame in taken for packet in frame.audio]
            yield timed, arrived

    def close(self) -> None:
        self.latest.close()


def open_writers(
    reader: Reader, files: dict[str, Path], settings: VideoSettings, stack: contextlib.ExitStack
) -> tuple[dict[str, Writer], list[str]]:
    """A writer per output (entered on ``stack``) and the notes the user should read."""
    width, height = reader.width, reader.height
    audio = reader.audio_stream if settings.audio else None
    writers: dict[str, Writer] = {}
    notes: list[str] = []

    def video(kind: str, encoding: Encoding, frame_kind: Any, out_width: int) -> VideoWriter:
        if encoding.note and encoding.note not in notes:
            notes.append(encoding.note)
        sound = None if kind == "alpha" else audio
        dest = files[kind]
        if sound is not None:
            name = sound.codec_context.name
            if audio_needs_reencode(dest.suffix.lower(), name):
                notes.append(f"{dest.name}: {name} audio re-encoded ({dest.suffix} cannot hold it)")
        return VideoWriter(
            dest,
            width=out_width,
            height=height,
            encoding=encoding,
            time_base=reader.time_base,
            rate=reader.rate,
            audio=sound,
            kind=frame_kind,
        )

    for kind in files:
        if kind == "alpha":
            enc = plan_encoding(settings.codec, settings.crf, width, height, matte=True)
            writers[kind] = video(kind, enc, "gray", width)
        elif kind in ("composite", "side"):
            out_width = width * (2 if kind == "side" else 1)
            enc = plan_encoding(settings.codec, settings.crf, out_width, height)
            writers[kind] = video(kind, enc, "bgr", out_width)
        elif kind == "rgba" and settings.rgba_format == "png":
            writers[kind] = PngSequenceWriter(files[kind], png_compression=settings.png_compression)
        elif kind == "rgba":
            assert settings.rgba_format is not None
            rgba_codec = RGBA_FORMATS[settings.rgba_format]
            enc = plan_encoding(rgba_codec, rgba_codec.crf, width, height)
            writers[kind] = video(kind, enc, "bgra", width)
    for writer in writers.values():
        stack.enter_context(writer)
    return writers, notes


def matte_video(
    session: MattingSession,
    reader: Reader,
    frames: Iterator[TimedFrame],
    files: dict[str, Path],
    settings: VideoSettings,
    stack: contextlib.ExitStack,
    progress: Progress | None = None,
    live: LiveSource | None = None,
) -> tuple[int, list[str]]:
    """Write every output of one video; return the frames written and the notes.

    ``frames`` are the reader's frames (possibly cut short by the caller, as a camera is on
    Ctrl-C); with ``live``, frames come from it instead, one at a time, the newest.
    ``stack`` owns the reader, and the writers are entered on it so they finish (or
    discard) before the reader is closed.
    """
    status: Callable[[str], None] | None = getattr(progress, "status", None)
    session.network_size(reader.height, reader.width)  # refused before any writer opens
    writers, notes = open_writers(reader, files, settings, stack)
    background = settings.background
    player = background.player() if background is not None else None
    if player is not None:
        stack.callback(player.close)
    ofd = OneFrameDelay(settings.ofd_tolerance) if settings.ofd else None
    pending: deque[TimedFrame] = deque()  # frames waiting for their OFD-delayed alpha
    # One encoding thread: frames must reach the writers in order.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modnet-encode")
    slots = threading.BoundedSemaphore(4)  # a bounded queue: decoded frames cannot pile up
    futures: deque[Future[None]] = deque()

    def encode(timed: TimedFrame, alpha: F32Array, arrived: LiveFrame | None) -> None:
        try:
            frame = timed.image
            alpha8 = quantize_alpha(alpha)
            view: U8Image = grey_to_bgr(alpha8)
            if "alpha" in writers:
                writers["alpha"].write(alpha8, timed.pts)
            if player is not None:
                view = composite(frame, alpha8, player.render(frame, timed.seconds))
                writers["composite"].write(view, timed.pts, timed.audio)
            if "side" in writers:
                writers["side"].write(side_by_side(frame, view), timed.pts, timed.audio)
            if "rgba" in writers:
                writers["rgba"].write(cutout(frame, alpha8), timed.pts, timed.audio)
            if live is not None and arrived is not None:
                live.latest.done(arrived)  # written: camera-to-output latency of this frame
                if status is not None:
                    status(live.stats.progress())
            if progress is not None:
                progress.advance(1)
        finally:
            slots.release()

    def emit(timed: TimedFrame, alpha: F32Array, arrived: LiveFrame | None = None) -> None:
        slots.acquire()
        futures.append(pool.submit(functools.partial(encode, timed, alpha, arrived)))
        while futures and futures[0].done():
            futures.popleft().result()  # an encoder failure stops the run at once

    count = 0
    if live is not None:
        try:  # one frame at a time, the newest: whatever arrives meanwhile is dropped
            for timed, arrived in live:
                emit(timed, session.matte(timed.image), arrived)
                count += 1
        finally:
            pool.shutdown(wait=True)
        for future in futures:
            future.result()
        return count, notes
    try:
        ahead = prefetch(frames, depth=4)
        # Stop the decoding thread before the reader is closed (the stack unwinds in reverse).
        stack.callback(ahead.close)
        keyed = ((timed, timed.image) for timed in ahead)
        for timed, _, alpha in session.matte_stream(keyed):
            count += 1
            if ofd is None:
                emit(timed, alpha)
                continue
            pending.append(timed)
            smoothed = ofd.push(alpha)
            if smoothed is not None:
                emit(pending.popleft(), smoothed)
        if ofd is not None:
            last = ofd.flush()
            if last is not None:
                emit(pending.popleft(), last)
    finally:
        pool.shutdown(wait=True)
    for future in futures:
        future.result()
    return count, notes
