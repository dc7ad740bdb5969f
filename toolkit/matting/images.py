"""Reading whatever a user points ``infer`` at: image files, folders, globs, videos, cameras.

Images are decoded with Pillow because it reads every format asked for (JPEG, PNG, WebP, BMP,
TIFF, GIF's first frame, AVIF, and HEIC/HEIF through pillow-heif: phones shoot HEIC) at 8 and
16 bits, gives the size and the EXIF orientation before
decoding (so an absurd size is refused before memory is spent on it) and raises on truncated
files, where OpenCV would return a half-grey picture and print warnings. Every image comes out
as what the rest of the toolkit expects: BGR, uint8, H x W x 3, upright.

Whether a file is a still image or a video is decided by its content, not its name
(:mod:`toolkit.matting.sniff`), so the same size limits apply to a photo called ``.avi``.

Each failure the user can cause (missing, empty, corrupt, not an image, too small, too large)
is one :class:`InputError` with a one-line message naming the file.
"""

from __future__ import annotations

import contextlib
import glob
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from toolkit.errors import ToolkitError
from toolkit.matting.marker import OUTPUT_SUFFIXES, is_tool_output, output_source_stem
from toolkit.matting.sniff import (
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    classify_media,
    is_media_candidate,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "MIN_SIDE",
    "OUTPUT_SUFFIXES",
    "VIDEO_EXTENSIONS",
    "Expansion",
    "InputError",
    "InputItem",
    "TooLargeError",
    "camera_index",
    "classify_file",
    "expand",
    "expand_inputs",
    "image_size",
    "load_image",
]

U8Image = npt.NDArray[np.uint8]

#: Default ceiling on width x height: above 8K UHD and a 50 MP phone photo, far below what
#: exhausts memory while the frame is converted to float for resizing and compositing.
DEFAULT_MAX_PIXELS = 70_000_000
#: The smallest side accepted: the network works in strides of 32 pixels.
MIN_SIDE = 32

#: The EXIF tag of the camera's orientation (1 = upright; 2-8 = mirrored and/or rotated).
_ORIENTATION = 0x0112

_HEIF_REGISTERED = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF (pillow-heif; Pillow reads AVIF itself), once, on first use, and
    hand the size guard to :func:`_check_size`: Pillow's own bomb check would refuse or warn
    at its fixed 89 MP before ``--max-pixels`` is even looked at."""
    global _HEIF_REGISTERED
    if _HEIF_REGISTERED:
        return
    Image.MAX_IMAGE_PIXELS = None
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - a base dependency; HEIC then fails in one line
        pass
    else:
        pillow_heif.register_heif_opener()
    _HEIF_REGISTERED = True


class InputError(ToolkitError):
    """An input (file, folder, glob, camera) that cannot be read as asked."""


class TooLargeError(InputError):
    """An image (or video frame) over the ``--max-pixels`` limit, refused before decoding."""


class NotAnImageError(InputError):
    """Data in no image format this tool reads."""


InputKind = Literal["image", "video", "camera", "error"]


@dataclass(frozen=True)
class InputItem:
    """One unit of work after expansion: an image, a video, a camera, or an unusable spec.

    ``error`` items carry the reason; the runner reports them as failures without stopping
    the others, exactly like an image that fails to decode.
    """

    kind: InputKind
    label: str
    path: Path | None = None
    camera: int | None = None
    error: str | None = None


#: Camera indices accepted on the command line: OpenCV's V4L2 backend maps index N to
#: /dev/videoN, and Linux numbers those below 256 (a larger number is a typo, not a camera).
MAX_CAMERA_INDEX = 255


def camera_index(spec: str) -> int | None:
    """The camera index ``spec`` names (ASCII decimal digits only), or None.

    ``str.isdigit`` also accepts superscripts and other scripts' digits ('²', '٣'), which
    ``int()`` then refuses or turns into a surprise; only 0-9 count here.
    """
    if spec and spec.isascii() and spec.isdigit():
        return int(spec)
    return None


def _camera_error(spec: str) -> str | None:
    """Why a spec that looks like a camera is not one, or None for a plain missing path."""
    index = camera_index(spec)
    if index is not None:
        if index > MAX_CAMERA_INDEX:
            return f"{spec}: not a camera index (cameras are numbered 0 to {MAX_CAMERA_INDEX}) and no such file"
        return None
    body = spec.strip()
    signed = body[1:] if body[:1] in "+-" else body
    if signed and (signed.isdigit() or signed.lower().startswith("0x")):
        return (
            f"{spec}: not a camera index (cameras are 0, 1, 2 ... in plain decimal digits) "
            "and no such file"
        )
    return None


def classify_file(path: Path) -> InputKind:
    """``image`` or ``video`` for a file, from its content (see :mod:`toolkit.matting.sniff`)."""
    return classify_media(path)


def _file_item(path: Path) -> InputItem:
    return InputItem(kind=classify_media(path), label=str(path), path=path)


@dataclass
class Expansion:
    """The work items of a command line, and the files folders and globs left out as this
    tool's own outputs (reported in the summary, never skipped silently)."""

    items: list[InputItem]
    skipped: list[Path]


def _media_files(paths: list[Path], skipped: list[Path]) -> list[Path]:
    """Image and video files among ``paths``, without hidden files and this tool's outputs
    (the rule is :func:`toolkit.matting.marker.is_tool_output`); skipped outputs are added
    to ``skipped``."""
    files = [
        p for p in paths if not p.name.startswith(".") and p.is_file() and is_media_candidate(p)
    ]
    stems: dict[Path, set[str]] = {}
    for p in files:
        stems.setdefault(p.parent, set()).add(p.stem.lower())
    found = []
    for p in files:
        if output_source_stem(p) is not None and is_tool_output(p, stems[p.parent]):
            skipped.append(p)
        else:
            found.append(p)
    return found


def expand(specs: list[str]) -> Expansion:
    """Turn command-line inputs into work items, in the order given (folders sorted by name).

    A spec is an existing file (image or video, told apart by content: see
    :mod:`toolkit.matting.sniff`), a folder (its images and videos, not recursive), a glob
    (``*``, ``?``, ``[]``, ``**``), or a camera index (0-9 digits, at most
    :data:`MAX_CAMERA_INDEX`, that are not an existing file). Anything else becomes an
    ``error`` item so that one bad spec fails alone. A file reached twice is processed once.
    Folders and globs skip this tool's outputs; a file named explicitly is always processed.
    """
    items: list[InputItem] = []
    skipped: list[Path] = []
    seen: set[Path] = set()

    def add(item: InputItem) -> None:
        if item.path is not None:
            key = item.path.resolve()
            if key in seen:
                return
            seen.add(key)
        items.append(item)

    def error(spec: str, why: str) -> None:
        items.append(InputItem(kind="error", label=spec, error=why))

    for spec in specs:
        try:
            path = Path(spec)
            exists = path.exists()
        except (OSError, ValueError) as exc:  # NUL bytes, names too long for the system
            error(spec, f"{spec!r}: not a usable path ({exc})")
            continue
        index = camera_index(spec)
        if index is not None and not exists and index <= MAX_CAMERA_INDEX:
            items.append(InputItem(kind="camera", label=f"camera {spec}", camera=index))
        elif path.is_dir():
            try:
                found = _media_files(sorted(path.iterdir()), skipped)
            except OSError as exc:  # an unreadable folder fails alone, like a bad file
                error(spec, f"{spec}: {exc.strerror or exc}")
                continue
            if not found:
                error(spec, f"{spec}: no images or videos found" + _skip_note(path, skipped))
            for file in found:
                add(_file_item(file))
        elif path.is_file():
            add(_file_item(path))
        elif glob.has_magic(spec):
            before = len(skipped)
            found = _media_files(
                [Path(p) for p in sorted(glob.glob(spec, recursive=True))], skipped
            )
            if not found:
                note = (
                    f" ({len(skipped) - before} of this tool's outputs skipped)"
                    if len(skipped) > before
                    else ""
                )
                error(spec, f"{spec}: no image or video matches{note}")
            for file in found:
                add(_file_item(file))
        elif exists:
            error(spec, f"{spec}: not a regular file")
        else:
            error(spec, _camera_error(spec) or f"{spec}: no such file")
    return Expansion(items, skipped)


def _skip_note(folder: Path, skipped: list[Path]) -> str:
    mine = [p for p in skipped if p.parent == folder]
    return f" (only {len(mine)} of this tool's outputs, skipped)" if mine else ""


def expand_inputs(specs: list[str]) -> list[InputItem]:
    """The work items of :func:`expand` (for callers that do not report skipped outputs)."""
    return expand(specs).items


# --- decoding ----------------------------------------------------------------------------------


def _check_size(path: Path | str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise TooLargeError(
            f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise it with --max-pixels if this is intended)"
        )
    if min(width, height) < min_side:
        raise InputError(
            f"{path}: the image is too small ({width}x{height}); each side needs at least "
            f"{min_side} pixels"
        )


def _high_depth_to_u8(arr: npt.NDArray[np.generic]) -> U8Image:
    """16-bit (or 32-bit integer) samples to 8 bits with rounding; floats taken as 0..1."""
    if np.issubdtype(arr.dtype, np.floating):
        data = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if float(data.max(initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.rint(data * scale), 0, 255).astype(np.uint8)
    wide = arr.astype(np.float32)
    return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)


def _flatten_over_white(rgba: U8Image) -> U8Image:
    """Composite RGBA over white: transparent pixels hold arbitrary colours the network should
    not see, and a portrait on white is what a cut-out looks like to a matting model."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.rint(rgb).astype(np.uint8)


def _pillow_to_bgr(im: Image.Image) -> U8Image:
    """Any Pillow mode -> BGR uint8 H x W x 3."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        grey = _high_depth_to_u8(np.asarray(im))
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgb = _flatten_over_white(np.asarray(im.convert("RGBA")))
    elif mode == "L":
        return np.asarray(cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2BGR), np.uint8)
    else:
        rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.uint8)


def _stat_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")


_READABLE = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF, AVIF"


def image_size(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> tuple[int, int]:
    """(width, height) from the file's header, refused in one :class:`InputError` when over
    ``max_pixels`` or under ``min_side``: the check every reader runs before decoding (a
    634-byte JPEG may declare 30000x30000, 2.7 GB once decoded)."""
    path = Path(path)
    _stat_file(path)
    _register_heif()
    try:
        with Image.open(path) as im:
            width, height = im.width, im.height
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not an image in a format this tool reads ({_READABLE})"
        ) from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: absurd image dimensions ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: corrupt or truncated image ({detail})") from None
    _check_size(path, width, height, max_pixels, min_side)
    return width, height


def load_image(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> U8Image:
    """Read an image file as upright BGR uint8 (H x W x 3), or raise one clear :class:`InputError`.

    Grey images are expanded to three channels; an alpha channel is flattened over white;
    16-bit samples are rounded to 8 bits; EXIF orientation is applied (phones store portraits
    sideways with a rotation tag). Animated or multi-page files give their first frame.
    """
    path = Path(path)
    _stat_file(path)
    return _decode(path, str(path), max_pixels, min_side)


def decode_image(
    data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> U8Image:
    """:func:`load_image` for an image held in memory (an upload): the same decoder, the same
    limits (checked on the header, before decoding), the same conversions; ``label`` names it
    in errors."""
    if not data:
        raise InputError(f"{label}: the image is empty (0 bytes)")
    return _decode(io.BytesIO(data), label, max_pixels, min_side)


def decoded_size(
    data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> tuple[int, int]:
    """(width, height) of an image held in memory, from its header, with the limits of
    :func:`decode_image` applied: what a server checks before it spends memory on decoding."""
    if not data:
        raise InputError(f"{label}: the image is empty (0 bytes)")
    with _opened(io.BytesIO(data), label) as im:
        _check_size(label, im.width, im.height, max_pixels, min_side)
        return im.width, im.height


def _decode(source: Path | BinaryIO, label: str, max_pixels: int, min_side: int) -> U8Image:
    """Decode a file or an in-memory image to upright BGR uint8, or raise one InputError."""
    with _opened(source, label) as im:
        _check_size(label, im.width, im.height, max_pixels, min_side)
        # exif_transpose copies even an upright image: only call it when a tag says so.
        if im.getexif().get(_ORIENTATION, 1) in range(2, 9):
            return _pillow_to_bgr(ImageOps.exif_transpose(im))
        return _pillow_to_bgr(im)


@contextlib.contextmanager
def _opened(source: Path | BinaryIO, label: str) -> Iterator[Image.Image]:
    """The image opened by Pillow; whatever goes wrong while it is open, in here or in the
    caller's block, comes out as one InputError naming ``label``."""
    _register_heif()
    try:
        with Image.open(source) as im:
            yield im
    except InputError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{label}: not an image in a format this tool reads ({_READABLE})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise TooLargeError(f"{label}: absurd image dimensions ({exc})") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label}: corrupt or truncated image ({detail})") from None
    except MemoryError:
        raise InputError(f"{label}: not enough memory to decode this image") from None
