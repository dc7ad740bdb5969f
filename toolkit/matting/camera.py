"""Camera capture with OpenCV, which has the platform capture back-ends (V4L2, AVFoundation,
Media Foundation) that FFmpeg's libraries do not offer in-process.

A :class:`CameraReader` looks like a :class:`~toolkit.matting.video.VideoReader` to the runner:
it yields :class:`~toolkit.matting.video.TimedFrame` stamped with the time each frame arrived
(milliseconds since the first), so a recording keeps the camera's real, often irregular, pace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from fractions import Fraction
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from toolkit.matting.images import MIN_SIDE, InputError
from toolkit.matting.video import DEFAULT_FPS, TimedFrame

U8Image = npt.NDArray[np.uint8]

#: Camera timestamps are wall-clock milliseconds.
CAMERA_TIME_BASE = Fraction(1, 1000)


class CameraReader:
    """Frames of a camera as upright BGR uint8 arrays, until ``max_frames`` or the caller stops.

    ``width``, ``height`` and ``fps`` describe the capture; ``frame_count`` is ``max_frames``
    (0 without it: a camera never ends by itself). There is no audio.
    """

    audio_stream: Any = None
    time_base = CAMERA_TIME_BASE
    duration = 0.0

    def __init__(self, index: int, *, max_frames: int | None = None) -> None:
        self.label = f"camera {index}"
        self.max_frames = max_frames
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise InputError(f"{self.label}: cannot open this camera (OpenCV cannot read it)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise InputError(f"{self.label}: no frame could be read")
        self._started = time.monotonic()
        self._first: U8Image | None = _to_bgr(first)
        self.height, self.width = self._first.shape[:2]
        if min(self.height, self.width) < MIN_SIDE:
            self._cap.release()
            raise InputError(
                f"{self.label}: frames are too small ({self.width}x{self.height}); each side "
                f"needs at least {MIN_SIDE} pixels"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else DEFAULT_FPS
        self.rate = Fraction(self.fps).limit_denominator(1001)
        self.frame_count = max_frames or 0

    def frames(self) -> Iterator[TimedFrame]:
        """Frames with their arrival time; a frame of another size is resized to the first's."""
        produced = 0
        last = -1
        while self.max_frames is None or produced < self.max_frames:
            if self._first is not None:
                frame, self._first = self._first, None
            else:
                ok, raw = self._cap.read()
                if not ok or raw is None:
                    return
                frame = _to_bgr(raw)
                if frame.shape[:2] != (self.height, self.width):
                    frame = np.asarray(
                        cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA),
                        np.uint8,
                    )
            pts = max(last + 1, round((time.monotonic() - self._started) * 1000))
            last = pts
            produced += 1
            yield TimedFrame(frame, pts, CAMERA_TIME_BASE)

    def __iter__(self) -> Iterator[U8Image]:
        for timed in self.frames():
            yield timed.image

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> CameraReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _to_bgr(frame: npt.NDArray[Any]) -> U8Image:
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.asarray(frame, np.uint8)
