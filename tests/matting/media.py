"""Real video files for the video tests, made and read back with PyAV (FFmpeg's libraries).

:func:`make_video` writes a clip of the astronaut panning with exactly the timestamps asked for
(variable frame rate, 0.3 fps), an optional AAC or PCM sine tone as long as the picture, and an
optional display rotation. :func:`probe` decodes a file completely and reports what a player
would see: codec, pixel format, size, every frame's time, the frames' pixels and alpha, and
the audio's decoded duration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from toolkit.paths import sample_image

U8 = npt.NDArray[np.uint8]

#: A variable-frame-rate pattern (milliseconds): gaps of 40, 60, 30, 120, 10, 140, 33 ms.
VFR_MS = (0, 40, 100, 130, 250, 260, 400, 433)


def astronaut_frames(count: int, width: int, height: int) -> list[U8]:
    """``count`` BGR frames of a slowly panning crop of the sample photo."""
    base = cv2.imread(str(sample_image()), cv2.IMREAD_COLOR)
    assert base is not None
    frames = []
    for i in range(count):
        crop = base[4 * i : 4 * i + 400, 4 * i : 4 * i + 400]
        frames.append(np.asarray(cv2.resize(crop, (width, height)), np.uint8))
    return frames


def make_video(
    path: Path,
    pts: list[int] | tuple[int, ...],
    time_base: Fraction,
    width: int,
    height: int,
    *,
    audio: str | None = "aac",
    rotation: int = 0,
    codec: str = "libx264",
    frames: list[U8] | None = None,
) -> Path:
    """A real video: frame ``i`` at ``pts[i] * time_base`` seconds, and a 440 Hz tone as long
    as the picture (``audio`` is the encoder: ``aac``, ``pcm_s16le``... or None)."""
    images = frames or astronaut_frames(len(pts), width, height)
    odd = width % 2 or height % 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            sound = container.add_stream(audio, rate=44100)
            sound.layout = "stereo"
        for i, when in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(images[i], format="bgr24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts, frame.time_base = when, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if sound is not None:
            step = pts[-1] - pts[-2] if len(pts) > 1 else round(1 / time_base / 25)
            seconds = float((pts[-1] + step) * time_base)
            _write_tone(container, sound, seconds)
    return path


def _write_tone(container: Any, stream: Any, seconds: float) -> None:
    rate = 44100
    total = int(seconds * rate)
    t = np.arange(total) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt = stream.codec_context.codec.audio_formats[0].name
    for start in range(0, total, 1024):
        chunk = np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        if fmt != "fltp":
            frame = av.AudioResampler(format=fmt, layout="stereo", rate=rate).resample(frame)[0]
            frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


@dataclass
class Probe:
    """What a full decode of a video file found."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    times: list[float]
    images: list[U8]
    alphas: list[U8] = field(default_factory=list)
    audio_codec: str | None = None
    audio_seconds: float = 0.0


def probe(path: Path, *, gray: bool = False) -> Probe:
    """Decode every frame (BGR, or grey for a matte; the alpha plane too when there is one:
    VP9's alpha needs libvpx's decoder, FFmpeg's own drops it) and all the audio."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        decoder: Any = None
        alpha_mode = (
            stream.metadata.get("alpha_mode") == "1" or stream.metadata.get("ALPHA_MODE") == "1"
        )
        if ctx.name == "vp9" and alpha_mode:
            decoder = av.CodecContext.create("libvpx-vp9", "r")
        result = Probe(ctx.name, ctx.pix_fmt or "", ctx.width, ctx.height, [], [])
        for packet in container.demux(stream):
            frames = decoder.decode(packet if packet.size else None) if decoder else packet.decode()
            for frame in frames:
                if decoder is not None:
                    frame.pts, frame.time_base = packet.pts, stream.time_base
                    result.pix_fmt = frame.format.name
                result.times.append(float(frame.pts * stream.time_base))
                result.images.append(frame.to_ndarray(format="gray" if gray else "bgr24"))
                if "a" in frame.format.name.replace("gray", "g"):  # yuva*, rgba...
                    result.alphas.append(_alpha_of(frame))
    result.audio_codec, result.audio_seconds = audio_seconds(path)
    return result


def _alpha_of(frame: Any) -> U8:
    """The alpha channel as 8 bits, whatever depth the codec stores it in."""
    deep = any(depth in frame.format.name for depth in ("p10", "p12", "p16"))
    rgba = frame.to_ndarray(format="rgba64le" if deep else "rgba")
    alpha = rgba[..., 3]
    if alpha.dtype != np.uint8:
        alpha = np.rint(alpha.astype(np.float64) / 257.0).astype(np.uint8)
    return np.asarray(alpha, np.uint8)


def audio_seconds(path: Path) -> tuple[str | None, float]:
    """The audio codec and the decoded audio's duration (samples / rate), or (None, 0)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, 0.0
        stream = container.streams.audio[0]
        samples, rate = 0, 0
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
        return stream.codec_context.name, samples / rate if rate else 0.0


def frame_times(path: Path) -> list[float]:
    """Every frame's presentation time in seconds, without converting pixels."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * stream.time_base) for f in container.decode(stream)]
