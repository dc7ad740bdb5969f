"""Still image or video? Decided from a file's first bytes, never from its name alone.

A photo renamed ``.avi`` is still a photo, and an iPhone's ``.heic`` is a still image although
it lives in the same ISO base media container as an MP4: both were once sent down the video
path, which skips the image size limit and turned a HEIC photo into a 1-frame "video". So the
container is recognised by its signature (the "magic bytes" every format opens with), and for
ISO BMFF files (MP4, MOV, HEIC, AVIF, 3GP) by the brands in the ``ftyp`` box, which say
whether the file is a still image (``mif1``, ``heic``, ``avif`` ...) or a movie.

Only when the signature is unknown does the extension decide, and then only as a hint to the
decoder that will report precisely why the file is unreadable. A file whose signature is
unknown and whose name says nothing is probed by Pillow, then by PyAV.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

MediaKind = Literal["image", "video"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".heic", ".heif", ".hif", ".avif"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
    | {".3gp", ".3g2", ".ogv", ".mjpeg", ".mjpg", ".y4m", ".m2ts", ".mts", ".asf"}
)
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

#: ISO BMFF brands of still images: HEIF (``mif1``/``mif2`` and HEVC's ``heic``/``heix``...),
#: AVIF, and HEIF image sequences (``msf1``, ``hevc``, ``avis``), which phones write for bursts
#: and whose primary image is what a user means by "the photo".
_STILL_BRANDS = frozenset(
    {b"mif1", b"mif2", b"heic", b"heix", b"heim", b"heis", b"avif", b"avic", b"jpeg"}
    | {b"msf1", b"hevc", b"hevx", b"avis", b"avio"}
)
#: First box types of a QuickTime movie written without an ``ftyp`` box (old .mov files).
_QUICKTIME_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

_HEAD = 512


def _ftyp_kind(head: bytes) -> MediaKind | None:
    """The kind an ISO BMFF ``ftyp`` box declares: its major brand first, then the others."""
    if head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[0:4], "big")
    end = min(max(size, 16), len(head))
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _STILL_BRANDS:
        return "image"
    # A movie's major brand is isom/mp42/qt/3gp...; a still whose writer chose a generic major
    # brand still lists mif1 among the compatible ones, and a movie never does.
    if compatible & {b"mif1", b"mif2"}:
        return "image"
    return "video"


def _riff_kind(head: bytes) -> MediaKind | None:
    if head[:4] != b"RIFF":
        return None
    form = head[8:12]
    if form == b"WEBP":
        return "image"
    if form in (b"AVI ", b"AVIX", b"AMV "):
        return "video"
    return None


def _is_mpeg_ts(head: bytes) -> bool:
    return len(head) > 376 and head[0] == head[188] == head[376] == 0x47


def _multi_frame_jpeg(path: Path) -> bool:
    """A JPEG followed by another JPEG (an .mjpeg stream), found by an end-of-image marker
    directly followed by a start-of-image one. Entropy-coded data byte-stuffs 0xFF, so the
    pair appears nowhere inside a single picture."""
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if b"\xff\xd9\xff\xd8" in tail + chunk:
                return True
            tail = chunk[-3:]
    return False


def sniff(head: bytes) -> MediaKind | None:
    """The kind a file's first bytes declare, or None when the signature is not one we know."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image"  # JPEG (an .mjpeg stream starts the same way: see classify_media)
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")):
        return "image"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "image"  # JPEG 2000 / JPEG XL: stills (the decoder says if it cannot read them)
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "image"  # PNM
    riff = _riff_kind(head)
    if riff is not None:
        return riff
    ftyp = _ftyp_kind(head)
    if ftyp is not None:
        return ftyp
    if head[4:8] in _QUICKTIME_BOXES:
        return "video"
    if head.startswith(
        (
            b"\x1a\x45\xdf\xa3",  # Matroska / WebM
            b"\x00\x00\x01\xba",  # MPEG program stream
            b"\x00\x00\x01\xb3",  # MPEG-1/2 video elementary stream
            b"FLV\x01",
            b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF / WMV
            b"OggS",
            b"YUV4MPEG2",
        )
    ):
        return "video"
    if _is_mpeg_ts(head):
        return "video"
    return None


def _probe(path: Path) -> MediaKind | None:
    """Last resort for an unknown signature: does Pillow or FFmpeg (PyAV) read it?"""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return "image"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass
    try:
        import av
    except ImportError:  # pragma: no cover - av is a base dependency
        return None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return "video" if container.streams.video else None
    except Exception:  # FFmpeg raises many types for "not a media file"
        return None


def classify_media(path: Path) -> MediaKind:
    """``image`` or ``video`` for an existing file, from its content.

    Unknown content falls back to the extension (a video extension -> ``video``, so the video
    reader explains what is wrong; anything else -> ``image``, so the image decoder does).
    """
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError:
        head = b""
    kind = sniff(head)
    suffix = path.suffix.lower()
    if kind == "image" and head.startswith(b"\xff\xd8\xff") and suffix in (".mjpeg", ".mjpg"):
        with contextlib.suppress(OSError):
            if _multi_frame_jpeg(path):
                return "video"
    if kind is not None:
        return kind
    if head and suffix not in MEDIA_EXTENSIONS:
        probed = _probe(path)
        if probed is not None:
            return probed
    return "video" if suffix in VIDEO_EXTENSIONS else "image"


def is_media_candidate(path: Path) -> bool:
    """Whether folder/glob expansion should consider ``path``: a known media extension, or a
    recognised signature (so ``IMG_0001`` without an extension, or ``.HEIC`` in any case, is
    found). Reads at most a few hundred bytes."""
    if path.suffix.lower() in MEDIA_EXTENSIONS:
        return True
    if path.suffix:  # notes.txt, data.json: not worth opening
        return False
    try:
        with path.open("rb") as f:
            return sniff(f.read(_HEAD)) is not None
    except OSError:
        return False
