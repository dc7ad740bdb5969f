"""Video and camera input, video output: OpenCV's VideoCapture and VideoWriter, made safe.

A reader yields BGR uint8 frames from a file or a camera and fails with one clear line when
the source cannot be opened. A writer produces its file atomically: OpenCV picks the container
from the file name, so it writes a hidden temporary file with the real extension beside the
destination and renames it into place only when every frame was written; an interrupted run
leaves no half-written video at the final path. Audio is not carried over (OpenCV has no audio).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from toolkit.fsutil import atomic_path
from toolkit.matting.images import MIN_SIDE, InputError

U8Image = npt.NDArray[np.uint8]

#: Codec for each container OpenCV's FFmpeg backend writes; anything else becomes .mp4.
_FOURCC = {
    ".mp4": "mp4v",
    ".m4v": "mp4v",
    ".mov": "mp4v",
    ".mkv": "mp4v",
    ".avi": "MJPG",
}
DEFAULT_FPS = 25.0


def output_extension(source: Path | None) -> str:
    """The extension of the video written for ``source`` (its own, when OpenCV can write it)."""
    suffix = source.suffix.lower() if source is not None else ""
    return suffix if suffix in _FOURCC else ".mp4"


class VideoReader:
    """Frames of a video file or a camera, as BGR uint8 arrays.

    ``max_frames`` bounds the read (a camera never ends by itself). ``fps``, ``width``,
    ``height`` and ``frame_count`` (an estimate from the container; 0 for cameras and for
    containers that do not say) describe the source.
    """

    def __init__(self, source: Path | int, *, max_frames: int | None = None) -> None:
        self.source = source
        self.label = f"camera {source}" if isinstance(source, int) else str(source)
        if isinstance(source, Path):
            if not source.is_file():
                raise InputError(f"{source}: no such file")
            if source.stat().st_size == 0:
                raise InputError(f"{source}: the file is empty (0 bytes)")
            self._cap = cv2.VideoCapture(str(source))
        else:
            self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            self._cap.release()
            what = "camera" if isinstance(source, int) else "video"
            raise InputError(f"{self.label}: cannot open this {what} (OpenCV cannot read it)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise InputError(f"{self.label}: no frame could be read (empty or corrupt video)")
        self._first: U8Image | None = self._to_bgr(first)
        self.height, self.width = self._first.shape[:2]
        if min(self.height, self.width) < MIN_SIDE:
            self._cap.release()
            raise InputError(
                f"{self.label}: frames are too small ({self.width}x{self.height}); each side "
                f"needs at least {MIN_SIDE} pixels"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else DEFAULT_FPS
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else 0
        if max_frames is not None and self.frame_count:
            self.frame_count = min(self.frame_count, max_frames)
        self.max_frames = max_frames

    @staticmethod
    def _to_bgr(frame: npt.NDArray[Any]) -> U8Image:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        return np.asarray(frame, np.uint8)

    def __iter__(self) -> Iterator[U8Image]:
        """Every frame, the first one included, until the source ends or ``max_frames``."""
        produced = 0
        if self._first is not None:
            first, self._first = self._first, None
            if self.max_frames is None or self.max_frames > 0:
                produced += 1
                yield first
        while self.max_frames is None or produced < self.max_frames:
            ok, raw = self._cap.read()
            if not ok or raw is None:
                return
            frame = self._to_bgr(raw)
            if frame.shape[:2] != (self.height, self.width):  # a mid-stream size change
                frame = self._to_bgr(
                    cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
                )
            produced += 1
            yield frame

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class VideoWriter:
    """An atomically written video: frames go to a hidden temporary file, renamed on success.

    Use as a context manager; the file appears at ``dest`` only if the block exits normally
    after at least one frame. Frames must be BGR uint8 of ``width`` x ``height``.
    """

    def __init__(self, dest: Path, *, fps: float, width: int, height: int) -> None:
        self.dest = dest
        self.fps = fps
        self.size = (width, height)
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._writer: cv2.VideoWriter | None = None
        self._inner: Path | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> VideoWriter:
        tmp = self._stack.enter_context(atomic_path(self.dest))
        # atomic_path's name ends in ".part"; OpenCV needs the real extension to pick a muxer.
        self._inner = tmp.with_name(tmp.name.removesuffix(".part"))
        self._stack.callback(self._remove_inner)
        fourcc = cv2.VideoWriter.fourcc(*_FOURCC.get(self.dest.suffix.lower(), "mp4v"))
        self._writer = cv2.VideoWriter(str(self._inner), fourcc, self.fps, self.size)
        if not self._writer.isOpened():
            self._stack.close()
            raise InputError(f"{self.dest}: OpenCV cannot write this video format")
        self._tmp = tmp
        return self

    def _remove_inner(self) -> None:
        if self._inner is not None:
            with contextlib.suppress(FileNotFoundError):
                self._inner.unlink()

    def write(self, frame: U8Image) -> None:
        assert self._writer is not None, "use VideoWriter as a context manager"
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]}, expected {self.size}")
        self._writer.write(np.ascontiguousarray(frame))
        self.frames += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.release()
        inner, tmp = self._inner, self._tmp
        ready = exc_type is None and self.frames > 0 and inner is not None and tmp is not None
        if ready and inner is not None and tmp is not None and _frames_in(inner) == self.frames:
            os.replace(inner, tmp)  # atomic_path renames it onto dest on exit
            self._stack.close()
            return
        # Failure or nothing written: make atomic_path discard instead of publishing.
        self._remove_inner()
        with contextlib.suppress(BaseException):
            self._stack.__exit__(RuntimeError, RuntimeError("video not completed"), None)
        if ready:
            raise OSError(
                errno.EIO,
                f"the video came out short of its {self.frames} frames "
                "(disk full or a file-size limit?)",
            )


def _frames_in(path: Path) -> int:
    """Frames that decode from a finished video file.

    OpenCV's VideoWriter ignores write errors: on a full disk it leaves a truncated file whose
    header still counts every frame. Decoding the result back (a few ms a frame, next to
    ~100 ms of inference) is the only way to know it is whole before it is published.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()
