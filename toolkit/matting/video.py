"""Reading video files with PyAV (FFmpeg's libraries, in-process): frames, timestamps, audio.

OpenCV's ``VideoCapture`` throws away what a faithful output needs: each frame's presentation
time (variable frame rate, 0.3 fps time-lapses), the display rotation phones record instead of
turning the pixels, and the audio track. :class:`VideoReader` keeps all three:

* every frame comes out as upright BGR uint8 (the rotation in the stream's display matrix is
  applied) together with its presentation timestamp in the stream's own time base, so that a
  writer can give each output frame exactly its input frame's time;
* the audio packets demuxed between two video frames travel with the frame they precede, so a
  writer can copy them into its output without re-encoding and already interleaved (and, when
  asked, decoded too, for a container that cannot hold the codec);
* the size is checked against ``max_pixels`` from the stream's header, before any frame is
  decoded.

Cameras stay with OpenCV (:mod:`toolkit.matting.camera`), which has the capture back-ends.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt

from toolkit.matting.images import DEFAULT_MAX_PIXELS, MIN_SIDE, InputError
from toolkit.matting.prepost import ClipFactory

U8Image = npt.NDArray[np.uint8]

#: The rate assumed when a container states none (and frames carry no timestamps).
DEFAULT_FPS = 25.0
#: Packets that fail to decode in a row before the file is called corrupt (FFmpeg's own tools
#: skip a damaged packet and go on; a file of nothing but damage should still end).
MAX_BAD_PACKETS = 50


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's own log lines (x264's statistics, "moov atom not found") off stderr:
    every failure the user can cause is reported as one line of ours instead."""
    import av.logging

    av.logging.set_level(av.logging.PANIC)


@dataclass(frozen=True)
class AudioPacket:
    """One compressed audio packet, copied out of the input (a packet is consumed when muxed,
    and one input packet may go into several outputs). ``frames`` holds its decoded samples
    when the reader was asked to decode audio (for a container that needs re-encoding)."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int | None
    time_base: Fraction
    keyframe: bool
    frames: tuple[av.AudioFrame, ...] = ()

    def to_packet(self) -> av.Packet:
        """A fresh packet with this data and these timestamps (for one output)."""
        packet = av.Packet(self.data)
        packet.pts, packet.dts, packet.time_base = self.pts, self.dts, self.time_base
        if self.duration is not None:
            packet.duration = self.duration
        packet.is_keyframe = self.keyframe
        return packet

    @property
    def seconds(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)


@dataclass
class TimedFrame:
    """A decoded frame: upright BGR pixels, its presentation time, the audio to mux with it."""

    image: U8Image
    pts: int
    time_base: Fraction
    duration: int | None = None
    audio: list[AudioPacket] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


def _to_bgr(frame: av.VideoFrame) -> U8Image:
    """The frame as upright BGR uint8: FFmpeg converts the pixel format, numpy turns it.

    ``frame.rotation`` is the counter-clockwise angle of the display matrix (what a player
    applies); ``np.rot90`` turns counter-clockwise too, so the result looks as it plays.
    """
    image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
    turns = (round(frame.rotation / 90) % 4) if frame.rotation else 0
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))
    return image


class VideoReader:
    """A video file's frames as upright BGR uint8 arrays, with their timestamps and audio.

    Iterating yields the pixel arrays (what a caller that only wants pictures needs);
    :meth:`frames` yields :class:`TimedFrame` with the timestamp and the audio packets.
    ``width`` x ``height`` is the displayed size (after rotation); ``fps`` the average rate;
    ``frame_count`` an estimate from the container (0 when it does not say), bounded by
    ``max_frames``; ``duration`` the container's duration in seconds (0 when unknown).
    Raises :class:`InputError` with one line for anything that is not a readable video.
    """

    def __init__(
        self,
        source: Path,
        *,
        max_frames: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        audio: bool = True,
        decode_audio: bool = False,
    ) -> None:
        self.source = source
        self.label = str(source)
        self.max_frames = max_frames
        self.decode_audio = decode_audio
        self.want_audio = audio
        if not source.is_file():
            raise InputError(f"{source}: no such file")
        if source.stat().st_size == 0:
            raise InputError(f"{source}: the file is empty (0 bytes)")
        quiet_ffmpeg()
        try:
            self._container: Any = av.open(str(source), "r", metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: cannot open this video ({_reason(exc)})") from None
        try:
            self._setup(max_pixels)
        except BaseException:
            self._container.close()
            raise

    def _setup(self, max_pixels: int) -> None:
        container = self._container
        if not container.streams.video:
            raise InputError(f"{self.label}: no video stream in this file")
        stream = container.streams.video[0]
        self.stream = stream
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise InputError(f"{self.label}: the video stream has no frame size (corrupt?)")
        if min(width, height) < MIN_SIDE:  # from the header: nothing decoded yet
            raise InputError(
                f"{self.label}: frames are too small ({width}x{height}); each side "
                f"needs at least {MIN_SIDE} pixels"
            )
        if width * height > max_pixels:
            raise InputError(
                f"{self.label}: frames of {width}x{height} are {width * height:,} pixels, over "
                f"the limit of {max_pixels:,} (raise it with --max-pixels if this is intended)"
            )
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with encoding
        self.time_base: Fraction = stream.time_base or Fraction(1, 90_000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        self.fps = fps if math.isfinite(fps) and 0.001 <= fps <= 1000 else DEFAULT_FPS
        self.rate: Fraction = Fraction(rate) if rate and fps == self.fps else Fraction(25)
        self.duration = self._duration()
        frames = int(stream.frames or 0) or round(self.duration * self.fps)
        self.frame_count = min(frames, self.max_frames) if self.max_frames else frames
        has_audio = self.want_audio and bool(container.streams.audio)
        self.audio_stream: Any = container.streams.audio[0] if has_audio else None
        self._frames = self._decode()
        try:
            first = next(self._frames)
        except StopIteration:
            raise InputError(
                f"{self.label}: no frame could be decoded (empty or corrupt video)"
            ) from None
        self._first: TimedFrame | None = first
        self.height, self.width = first.image.shape[:2]
        if min(self.height, self.width) < MIN_SIDE:
            raise InputError(
                f"{self.label}: frames are too small ({self.width}x{self.height}); each side "
                f"needs at least {MIN_SIDE} pixels"
            )

    def _duration(self) -> float:
        stream = self.stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self._container.duration:
            return float(self._container.duration) / av.time_base
        return 0.0

    # --- decoding --------------------------------------------------------------------------

    def _decode(self) -> Iterator[TimedFrame]:
        """Frames in presentation order with monotonic timestamps; each carries the audio
        packets demuxed before the next frame appeared (the last one: all that remain)."""
        streams = [self.stream] + ([self.audio_stream] if self.audio_stream is not None else [])
        audio: list[AudioPacket] = []
        held: TimedFrame | None = None
        last_pts: int | None = None
        index = 0
        bad = 0
        for packet in self._demux(streams):
            if packet is not None and packet.stream.type == "audio":
                if packet.size or self.decode_audio:  # an empty one flushes the decoder
                    audio.append(self._audio_packet(packet))
                continue
            try:
                decoded = packet.decode() if packet is not None else self.stream.decode(None)
                bad = 0
            except (av.error.FFmpegError, EOFError):  # a damaged packet: skip it, as FFmpeg does
                bad += 1
                if bad > MAX_BAD_PACKETS or packet is None:
                    break
                continue
            for frame in decoded:
                pts = self._pts(frame, index, last_pts)
                last_pts, index = pts, index + 1
                try:
                    image = _to_bgr(frame)
                except (ValueError, av.error.FFmpegError) as exc:
                    name = frame.format.name
                    raise InputError(
                        f"{self.label}: cannot convert its {name} frames ({_reason(exc)})"
                    ) from None
                if held is not None and image.shape != held.image.shape:
                    image = _resized(image, held.image.shape)
                if held is not None:
                    held.duration = pts - held.pts
                    held.audio, audio = audio, []
                    yield held
                held = TimedFrame(image, pts, self.time_base)
        if held is not None:
            held.audio = audio
            yield held

    def _demux(self, streams: list[Any]) -> Iterator[Any]:
        """Packets until the end (PyAV ends each stream with an empty packet that flushes its
        decoder). A demuxer error ends the file there, as a truncated download plays up to
        where it stops: None then asks for the decoder's buffered frames."""
        try:
            yield from self._container.demux(streams)
        except av.error.FFmpegError:
            yield None

    def _audio_packet(self, packet: Any) -> AudioPacket:
        frames: tuple[av.AudioFrame, ...] = ()
        if self.decode_audio:
            try:
                frames = tuple(packet.decode())
            except (av.error.FFmpegError, EOFError):
                frames = ()
        return AudioPacket(
            bytes(packet),
            packet.pts,
            packet.dts,
            packet.duration,
            packet.time_base or self.audio_stream.time_base,
            bool(packet.is_keyframe),
            frames,
        )

    def _pts(self, frame: av.VideoFrame, index: int, last: int | None) -> int:
        """The frame's timestamp in the stream's time base, made strictly increasing (an
        encoder refuses anything else); a frame without one gets the nominal rate's."""
        pts = frame.pts
        if pts is None:
            step = 1 / (self.fps * self.time_base)
            pts = round(index * step) if last is None else last + max(1, round(step))
        if last is not None and pts <= last:
            pts = last + 1
        return int(pts)

    def frames(self) -> Iterator[TimedFrame]:
        """Every frame (the first included) until the end or ``max_frames``.

        Each frame carries the audio that starts before the next frame: packets demuxed
        early (decoders hold frames back) wait for their frame, so the audio of the frames
        kept by ``max_frames`` ends where the picture ends.
        """
        limit = self.max_frames
        pending = [self._first] if self._first is not None else []
        self._first = None
        carry: list[AudioPacket] = []
        for produced, timed in enumerate(_chain(pending, self._frames), start=1):
            if limit is not None and produced > limit:
                return
            end = self._end(timed)
            pool = carry + timed.audio
            if limit is not None and produced == limit:
                pool += self._audio_until(end)
            timed.audio = [p for p in pool if p.seconds is None or p.seconds < end]
            carry = [p for p in pool if p.seconds is not None and p.seconds >= end]
            yield timed

    def _end(self, timed: TimedFrame) -> float:
        """When a frame stops showing: the next frame's time (the last frame: forever)."""
        if timed.duration is None:
            return math.inf
        return float((timed.pts + timed.duration) * self.time_base)

    def _audio_until(self, end: float) -> list[AudioPacket]:
        """Audio still ahead in the file that starts before ``end`` (for the last frame kept
        by ``max_frames``): read on until the audio passes ``end``, at most a second more."""
        kept: list[AudioPacket] = []
        for timed in self._frames:
            kept.extend(p for p in timed.audio if p.seconds is not None and p.seconds < end)
            late = any(p.seconds is not None and p.seconds >= end for p in timed.audio)
            if late or timed.seconds >= end + 1.0:
                break
        return kept

    def __iter__(self) -> Iterator[U8Image]:
        for timed in self.frames():
            yield timed.image

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _resized(image: U8Image, shape: tuple[int, ...]) -> U8Image:
    """A frame of another size than the ones before (a damaged or spliced stream) at theirs:
    every output frame must have one size."""
    size = (shape[1], shape[0])
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _chain(first: list[TimedFrame], rest: Iterator[TimedFrame]) -> Iterator[TimedFrame]:
    yield from first
    yield from rest


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds around it."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror).rstrip(".").lower()
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def probe_frame_count(path: Path, max_frames: int | None = None) -> int:
    """The number of frames a video is expected to have (from the container's frame count or
    duration x rate), without decoding; 0 when it cannot be told."""
    try:
        with VideoReader(path, max_frames=max_frames, max_pixels=2**62) as reader:
            return reader.frame_count
    except InputError:
        return 0


def open_clip(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ClipFactory:
    """A video used as a background: checked now (one clear line if unreadable), then a
    factory of endless ``(seconds, BGR frame)`` streams that loop the clip with time running
    on across the loops, so a shorter background repeats under a longer input."""
    with VideoReader(path, max_pixels=max_pixels):
        pass

    def loop() -> Generator[tuple[float, U8Image], None, None]:
        offset = 0.0
        while True:
            end = offset
            with VideoReader(path, max_pixels=max_pixels) as reader:
                start: float | None = None
                step = 1.0 / reader.fps
                for timed in reader.frames():
                    if start is None:
                        start = timed.seconds
                    at = offset + timed.seconds - start
                    if timed.duration:
                        step = float(timed.duration * timed.time_base)
                    end = at + step
                    yield at, timed.image
            offset = max(end, offset + 1e-3)  # a clip always moves time forward

    return loop
