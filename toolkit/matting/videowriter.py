"""Writing video with PyAV: codec, container, pixel format, timestamps and audio, atomically.

What a writer guarantees:

* **codec and quality**: H.264 ``yuv420p`` at CRF 18 by default (plays in browsers, phones,
  QuickTime); HEVC, VP9 and FFV1 (lossless) on request; the container follows the extension;
* **exact size**: a frame is never cropped or scaled. H.264 and HEVC cannot hold an odd width or
  height in 4:2:0, so such a video is written in 4:4:4 (which holds any size) and the writer's
  :attr:`Encoding.note` says so in one line, since fewer players read 4:4:4;
* **timestamps**: each frame is written with the presentation time it is given (the input
  frame's), in the input's time base, so variable frame rate and 0.3 fps survive;
* **audio**: the input's packets are copied as they are; only a container that cannot hold
  the codec (AAC into WebM) gets a re-encode (Opus for WebM, AAC otherwise);
* **atomicity**: the file is written under a hidden temporary name beside the destination and
  renamed into place only when the writer opened, every frame was written and the trailer
  was written; a writer that fails to open, a failed encode, a full disk or Ctrl-C leave any
  earlier file at the destination untouched.

Transparent video (:data:`RGBA_FORMATS`): VP9 with alpha (``yuva420p``) in WebM, ProRes 4444
(``yuva444p10le``) in MOV, or a folder of PNG frames (:class:`PngSequenceWriter`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt

from toolkit.errors import ToolkitError, UsageError
from toolkit.fsutil import _UMASK, atomic_path
from toolkit.matting.marker import MARK, has_mark, mark_encoded
from toolkit.matting.video import AudioPacket, quiet_ffmpeg

U8Image = npt.NDArray[np.uint8]
FrameKind = Literal["bgr", "gray", "bgra"]


class VideoWriteError(ToolkitError):
    """A video output that could not be written (the encoder refused, the disk filled...)."""


@dataclass(frozen=True)
class VideoCodec:
    """One ``--video-codec`` choice: the FFmpeg encoder and how it is driven."""

    name: str
    encoder: str
    pix_fmt: str
    #: The pixel format for an odd width or height, when ``pix_fmt`` cannot hold one.
    odd_pix_fmt: str | None
    #: Constant-quality default (None: lossless codec, no CRF), and the encoder's CRF range.
    crf: int | None
    crf_max: int
    #: Containers that hold it, by extension; the first is where it goes by default.
    containers: tuple[str, ...]
    options: Mapping[str, str] = field(default_factory=dict)
    tag: str | None = None
    #: Extra encoder options for the matte video, a data channel: fidelity over looks.
    matte_options: Mapping[str, str] = field(default_factory=dict)


def _frozen(**options: str) -> Mapping[str, str]:
    return MappingProxyType(options)


#: The codecs ``--video-codec`` offers. Presets are chosen for speed at equal quality: on a
#: CPU busy with inference, x264's ``veryfast`` costs half of ``medium`` for files ~30% larger
#: at the same CRF (the picture quality is set by the CRF, not the preset).
CODECS: Mapping[str, VideoCodec] = MappingProxyType(
    {
        "h264": VideoCodec(
            "h264", "libx264", "yuv420p", "yuv444p", 18, 51, (".mp4", ".mkv", ".mov"),
            _frozen(preset="veryfast"), matte_options=_frozen(tune="psnr"),
        ),
        "hevc": VideoCodec(
            "hevc", "libx265", "yuv420p", "yuv444p", 20, 51, (".mp4", ".mkv", ".mov"),
            _frozen(preset="veryfast", **{"x265-params": "log-level=error"}), tag="hvc1",
            matte_options=_frozen(tune="psnr"),
        ),
        "vp9": VideoCodec(
            "vp9", "libvpx-vp9", "yuv420p", None, 30, 63, (".mp4", ".webm", ".mkv"),
            _frozen(deadline="realtime", **{"cpu-used": "8", "row-mt": "1"}),
        ),
        "ffv1": VideoCodec("ffv1", "ffv1", "bgr0", None, None, 0, (".mkv",), _frozen(level="3")),
    }
)  # fmt: skip
#: The matte (one grey channel) per codec: lossless codecs keep it exact in ``gray``.
_MATTE_PIX_FMT = {"ffv1": "gray"}
#: The matte video is encoded this many CRF steps finer than the picture (about half the
#: quantiser step): its values are data a compositor multiplies by. With x264's PSNR tuning
#: this keeps each frame within 2/255 (mean) of the image path's matte even on the noisy
#: mattes of random weights at 641x361, where CRF 18 untuned gives 2.5.
MATTE_CRF_OFFSET = 6

#: ``--rgba-video``: a transparent cut-out video, by format.
RGBA_FORMATS: Mapping[str, VideoCodec] = MappingProxyType(
    {
        "webm": VideoCodec(  # CRF 24, not 30: the alpha plane is data (2/255 mean, tested)
            "vp9", "libvpx-vp9", "yuva420p", None, 24, 63, (".webm",),
            _frozen(deadline="realtime", **{"cpu-used": "8", "row-mt": "1", "auto-alt-ref": "0"}),
        ),
        "mov": VideoCodec(
            "prores", "prores_ks", "yuva444p10le", None, None, 0, (".mov",),
            _frozen(profile="4", vendor="apl0", alpha_bits="16"),
        ),
    }
)  # fmt: skip
RGBA_VIDEO_CHOICES = (*RGBA_FORMATS, "png")

#: FFmpeg's muxer for each container extension (the temporary file's name ends in .part).
CONTAINERS: Mapping[str, str] = MappingProxyType(
    {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
)
VIDEO_EXTS = tuple(ext.lstrip(".") for ext in CONTAINERS)


def parse_codec(name: str) -> VideoCodec:
    """Validate ``--video-codec`` (``h265`` and ``x264``-style spellings are accepted)."""
    key = name.strip().lower()
    key = {"h265": "hevc", "x265": "hevc", "x264": "h264", "avc": "h264"}.get(key, key)
    if key not in CODECS:
        raise UsageError(f"--video-codec must be one of {', '.join(CODECS)}, not {name!r}")
    return CODECS[key]


def check_crf(codec: VideoCodec, crf: int | None) -> int | None:
    """The CRF to use: the codec's default, or ``crf`` if the codec has that range."""
    if crf is None:
        return codec.crf
    if codec.crf is None:
        raise UsageError(f"--crf does not apply to {codec.name}, which is lossless")
    if not 0 <= crf <= codec.crf_max:
        raise UsageError(f"--crf for {codec.name} must be 0..{codec.crf_max}, not {crf}")
    return crf


def container_extension(codec: VideoCodec, requested: str | None, source: Path | None) -> str:
    """The output extension: ``requested`` (``--video-ext``) if it holds the codec, else the
    source's own when it does, else the codec's first (MP4 for all but FFV1)."""
    if requested is not None:
        ext = "." + requested.lower().lstrip(".")
        if ext not in CONTAINERS:
            raise UsageError(f"--video-ext must be one of {', '.join(VIDEO_EXTS)}, not {requested}")
        if ext not in codec.containers:
            holders = ", ".join(e.lstrip(".") for e in codec.containers)
            raise UsageError(f"--video-ext {ext[1:]} cannot hold {codec.name} (use {holders})")
        return ext
    own = source.suffix.lower() if source is not None else ""
    return own if own in codec.containers else codec.containers[0]


@functools.cache
def _container_codecs(ext: str) -> frozenset[str]:
    with av.open(io.BytesIO(), "w", format=CONTAINERS[ext]) as probe:
        return frozenset(probe.supported_codecs)


#: Audio codecs MP4 and MOV hold in practice. FFmpeg's own list for them is wider (Vorbis in
#: MP4 is "experimental", PCM in MP4 a recent extension few players read): anything else is
#: re-encoded to AAC rather than risked.
_ISO_AUDIO: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        ".mp4": frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}),
        ".mov": frozenset(
            {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le"}
        ),
    }
)


def audio_needs_reencode(ext: str, audio_codec: str) -> bool:
    """Whether a container cannot hold an audio codec as it is (AAC in WebM, PCM in MP4)."""
    allowed = _ISO_AUDIO.get(ext)
    if allowed is not None:
        return audio_codec not in allowed
    return audio_codec not in _container_codecs(ext)


@dataclass(frozen=True)
class Encoding:
    """How one output is encoded: codec, CRF, and the pixel format chosen for its size."""

    codec: VideoCodec
    crf: int | None
    pix_fmt: str
    #: One line for the user when the pixel format differs from the codec's usual one.
    note: str | None = None
    matte: bool = False

    @property
    def options(self) -> dict[str, str]:
        """The encoder's options (the CRF included)."""
        options = dict(self.codec.options)
        if self.matte:
            options.update(self.codec.matte_options)
        if self.crf is not None:
            options["crf"] = str(self.crf)
        return options


def plan_encoding(
    codec: VideoCodec, crf: int | None, width: int, height: int, *, matte: bool = False
) -> Encoding:
    """The encoding of a ``width`` x ``height`` output: exact size, whatever it takes. The
    matte (``matte=True``) is encoded :data:`MATTE_CRF_OFFSET` steps finer than ``crf``."""
    pix_fmt = _MATTE_PIX_FMT.get(codec.name, codec.pix_fmt) if matte else codec.pix_fmt
    if matte and crf is not None:
        crf = max(0, crf - MATTE_CRF_OFFSET)
    odd = width % 2 or height % 2
    if odd and codec.odd_pix_fmt is not None and pix_fmt.endswith("420p"):
        note = (
            f"{width}x{height} has an odd side, which {codec.name} cannot hold in 4:2:0: "
            f"written in {codec.odd_pix_fmt} at the exact size (plays in VLC, mpv and editors, "
            "not in browsers or QuickTime; --video-codec vp9 plays there at any size)"
        )
        return Encoding(codec, crf, codec.odd_pix_fmt, note, matte)
    return Encoding(codec, crf, pix_fmt, matte=matte)


# --- audio ---------------------------------------------------------------------------------------


class _AudioCopy:
    """The input's audio packets, copied into the output untouched."""

    def __init__(self, container: Any, source: Any) -> None:
        self.container = container
        self.stream = container.add_stream_from_template(source)

    def write(self, packets: Iterable[AudioPacket]) -> None:
        for audio in packets:
            if not audio.data:
                continue  # the decoder's flush marker, not a packet
            packet = audio.to_packet()
            packet.stream = self.stream
            self.container.mux(packet)

    def flush(self) -> None:
        pass


class _AudioReencode:
    """The input's decoded audio, encoded for a container that cannot hold its codec (PyAV's
    encoder resamples and re-frames to what the codec takes, e.g. 48 kHz for Opus)."""

    def __init__(self, container: Any, source: Any, codec: str) -> None:
        self.container = container
        ctx = source.codec_context
        rate = 48_000 if codec == "libopus" else int(ctx.sample_rate or 48_000)
        self.stream = container.add_stream(codec, rate=rate)
        self.stream.layout = "stereo" if ctx.layout.nb_channels >= 2 else "mono"

        self.samples = 0

    def write(self, packets: Iterable[AudioPacket]) -> None:
        for audio in packets:
            for frame in audio.frames:
                # Samples counted from zero, so the muxer can mark the encoder's priming
                # and padding (an MP4 edit list) and the duration stays the input's.
                frame.pts, frame.time_base = self.samples, Fraction(1, frame.sample_rate)
                self.samples += frame.samples
                self._encode(frame)

    def _encode(self, frame: Any) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def flush(self) -> None:
        self._encode(None)


def _audio_track(
    container: Any, ext: str, source: Any | None
) -> _AudioCopy | _AudioReencode | None:
    if source is None:
        return None
    name = source.codec_context.name
    if not audio_needs_reencode(ext, name):
        return _AudioCopy(container, source)
    return _AudioReencode(container, source, "libopus" if ext == ".webm" else "aac")


# --- video ---------------------------------------------------------------------------------------


class VideoWriter:
    """One video output, written atomically (see the module's docstring).

    Use as a context manager. ``time_base`` is the input stream's, and each :meth:`write`
    gives the frame's ``pts`` in it; ``rate`` is the nominal frame rate (the encoder's rate
    control uses it; the timestamps decide the timing). ``audio`` is the input's audio stream
    to carry over (None for none). ``kind`` says what frames :meth:`write` takes: ``bgr``
    H x W x 3, ``gray`` H x W (the matte), or ``bgra`` H x W x 4 (the cut-out).
    """

    def __init__(
        self,
        dest: Path,
        *,
        width: int,
        height: int,
        encoding: Encoding,
        time_base: Fraction,
        rate: Fraction = Fraction(25),
        audio: Any | None = None,
        kind: FrameKind = "bgr",
    ) -> None:
        self.dest = dest
        self.size = (width, height)
        self.encoding = encoding
        self.time_base = time_base
        self.rate = rate
        self.audio_source = audio
        self.kind = kind
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._container: Any = None
        self._stream: Any = None
        self._audio: _AudioCopy | _AudioReencode | None = None
        self._last_pts: int | None = None

    def __enter__(self) -> VideoWriter:
        quiet_ffmpeg()
        ext = self.dest.suffix.lower()
        if ext not in CONTAINERS:
            raise VideoWriteError(f"{self.dest.name}: cannot write .{ext.lstrip('.')} video")
        tmp = self._stack.enter_context(atomic_path(self.dest))
        try:
            self._open(tmp, ext)
        except BaseException as exc:
            self._abort(exc)
            if isinstance(exc, av.error.FFmpegError | ValueError | OSError):
                codec = self.encoding.codec.name
                width, height = self.size
                raise VideoWriteError(
                    f"{self.dest.name}: the {codec} encoder cannot write {width}x{height} "
                    f"{self.encoding.pix_fmt} video ({_reason(exc)})"
                ) from None
            raise
        return self

    def _open(self, tmp: Path, ext: str) -> None:
        options = {"movflags": "+faststart"} if ext in (".mp4", ".mov") else {}
        # Matroska would shift every timestamp to make an AAC track's priming (negative
        # times) non-negative: the frames' times must stay the input's.
        negative = {"avoid_negative_ts": "disabled"} if ext == ".mkv" else None
        self._container = av.open(
            str(tmp), "w", format=CONTAINERS[ext], options=options, container_options=negative
        )
        self._container.metadata["comment"] = MARK.decode()  # folder runs skip our outputs
        codec = self.encoding.codec
        stream = self._container.add_stream(codec.encoder, rate=self.rate)
        stream.width, stream.height = self.size
        stream.pix_fmt = self.encoding.pix_fmt
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        stream.time_base = self.time_base
        if self.encoding.crf is not None and codec.encoder == "libvpx-vp9":
            ctx.bit_rate = 0  # constant quality: VP9 treats the CRF as a cap otherwise
        stream.options = self.encoding.options
        if codec.tag is not None and ext in (".mp4", ".mov"):
            ctx.codec_tag = codec.tag  # hvc1: the HEVC tag QuickTime and Safari play
        if self.kind == "gray":
            ctx.color_range = 2  # full range: the matte's 0..255 stored as it is
        elif not self.encoding.pix_fmt.startswith(("bgr", "gbr")):
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709, said so
            ctx.color_range = 1
        self._stream = stream
        self._audio = _audio_track(self._container, ext, self.audio_source)
        ctx.open()  # open the encoder now: a refusal fails before any frame is decoded

    def write(self, image: U8Image, pts: int, audio: Iterable[AudioPacket] = ()) -> None:
        """Encode one frame at ``pts`` (in ``time_base``) and mux the audio that goes with it."""
        assert self._container is not None, "use VideoWriter as a context manager"
        width, height = self.size
        if image.shape[:2] != (height, width):
            raise ValueError(f"frame of {image.shape[1]}x{image.shape[0]}, expected {self.size}")
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders refuse repeated timestamps
        frame = self._frame(image)
        frame.pts, frame.time_base = pts, self.time_base
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.write(audio)
        self.frames += 1

    def write_audio(self, audio: Iterable[AudioPacket]) -> None:
        """Audio with no frame of its own (what follows the last frame)."""
        if self._audio is not None:
            self._audio.write(audio)

    def _frame(self, image: U8Image) -> Any:
        fmt = self.encoding.pix_fmt
        if self.kind == "gray":
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            return frame if fmt == "gray" else frame.reformat(format=fmt, dst_color_range=2)
        source = "bgra" if self.kind == "bgra" else "bgr24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=source)
        if fmt == source:
            return frame
        if fmt.startswith(("bgr", "gbr")):
            return frame.reformat(format=fmt)
        return frame.reformat(format=fmt, dst_colorspace=1, dst_color_range=1)

    def _abort(self, exc: BaseException) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(exc), exc, None)  # discards the temporary file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._abort(exc)
            return
        if self.frames == 0:
            self._abort(VideoWriteError("no frame was written"))
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.flush()
            self._container.close()
        except (av.error.FFmpegError, OSError, ValueError) as failure:
            self._abort(failure)
            why = _reason(failure)
            raise VideoWriteError(f"{self.dest.name}: could not finish the video ({why})") from None
        self._stack.close()  # atomic_path renames the finished file onto dest


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror).rstrip(".")
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# --- a folder of PNG frames ----------------------------------------------------------------------

_FRAME_NAME = re.compile(r"\d{6}\.png")


def check_sequence_folder(dest: Path) -> None:
    """Refuse (a :class:`UsageError`) a PNG-sequence destination that is not ours to replace:
    a file, or a folder holding anything but numbered PNG frames this tool wrote (marked)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"{dest}: exists and is not a folder of PNG frames; remove it first")
    if dest.is_dir():
        # a frame name alone is not enough: a user's own 000001.png must carry this tool's mark
        strangers = [
            p.name
            for p in dest.iterdir()
            if not (_FRAME_NAME.fullmatch(p.name) and p.is_file() and has_mark(p))
        ]
        if strangers:
            raise UsageError(
                f"{dest}: the folder holds files that are not PNG frames of an earlier run "
                f"({strangers[0]}...); choose another -o or remove them"
            )


class PngSequenceWriter:
    """The cut-out as a folder of RGBA PNG files (``000001.png``, ...), for editors that take
    image sequences. Written into a hidden temporary folder and renamed into place when whole;
    an earlier folder at the destination is replaced only then."""

    def __init__(self, dest: Path, *, png_compression: int = 1) -> None:
        self.dest = dest
        self.level = png_compression
        self.frames = 0
        self._tmp: Path | None = None

    def __enter__(self) -> PngSequenceWriter:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        if self.dest.exists() and not self.dest.is_dir():
            raise VideoWriteError(f"{self.dest}: exists and is not a folder")
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", dir=self.dest.parent))
        return self

    def write(self, image: U8Image, pts: int = 0, audio: Iterable[AudioPacket] = ()) -> None:
        assert self._tmp is not None, "use PngSequenceWriter as a context manager"
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, self.level])
        if not ok:
            raise VideoWriteError(f"{self.dest}: could not encode frame {self.frames + 1}")
        self.frames += 1
        (self._tmp / f"{self.frames:06d}.png").write_bytes(mark_encoded(".png", data.tobytes()))

    def write_audio(self, audio: Iterable[AudioPacket]) -> None:
        pass  # a folder of pictures has no sound

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is None:
            return
        if exc is not None or self.frames == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.chmod(tmp, 0o777 & ~_UMASK)
        old: Path | None = None
        if self.dest.exists():  # keep the earlier folder until the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old.", dir=self.dest.parent))
            os.replace(self.dest, old / "previous")
        os.replace(tmp, self.dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
