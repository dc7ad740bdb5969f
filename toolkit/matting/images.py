"""Reading whatever a user points ``infer`` at: image files, folders, globs, videos, cameras.

Images are decoded with Pillow because it reads every format asked for (JPEG, PNG, WebP, BMP,
TIFF, GIF's first frame) at 8 and 16 bits, gives the size and the EXIF orientation before
decoding (so an absurd size is refused before memory is spent on it) and raises on truncated
files, where OpenCV would return a half-grey picture and print warnings. Every image comes out
as what the rest of the toolkit expects: BGR, uint8, H x W x 3, upright.

Each failure the user can cause (missing, empty, corrupt, not an image, too small, too large)
is one :class:`InputError` with a one-line message naming the file.
"""

from __future__ import annotations

import glob
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from toolkit.errors import ToolkitError

U8Image = npt.NDArray[np.uint8]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
    | {".3gp", ".ogv", ".mjpeg", ".mjpg"}
)

#: Default ceiling on width x height: above 8K UHD and a 50 MP phone photo, far below what
#: exhausts memory while the frame is converted to float for resizing and compositing.
DEFAULT_MAX_PIXELS = 70_000_000
#: The smallest side accepted: the network works in strides of 32 pixels.
MIN_SIDE = 32

#: Suffixes of the files ``infer`` writes; folder and glob expansion skips them so that
#: re-running on a folder that also receives the results does not matte the mattes.
OUTPUT_SUFFIXES = ("_alpha", "_rgba", "_composite", "_side")


#: The EXIF tag of the camera's orientation (1 = upright; 2-8 = mirrored and/or rotated).
_ORIENTATION = 0x0112


class InputError(ToolkitError):
    """An input (file, folder, glob, camera) that cannot be read as asked."""


class TooManyPixelsError(InputError):
    """An image whose declared size is over the pixel limit (refused before decoding)."""


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


def _is_output_name(path: Path) -> bool:
    return path.stem.endswith(OUTPUT_SUFFIXES)


def _sniff_kind(path: Path) -> InputKind:
    """Image or video, for a file whose extension says neither (header checks only)."""
    try:
        with Image.open(path):
            return "image"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass
    cap = cv2.VideoCapture(str(path))
    try:
        if cap.isOpened():
            return "video"
    finally:
        cap.release()
    return "image"  # decoding it will report precisely why it is neither


def classify_file(path: Path) -> InputKind:
    """``image`` or ``video`` for a file, by extension, else by a look at its contents."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return _sniff_kind(path)


def _file_item(path: Path) -> InputItem:
    return InputItem(kind=classify_file(path), label=str(path), path=path)


def _media_files(paths: list[Path]) -> list[Path]:
    """Known image and video files among ``paths``, without hidden files and our own outputs."""
    return [
        p
        for p in paths
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
        and not _is_output_name(p)
    ]


def expand_inputs(specs: list[str]) -> list[InputItem]:
    """Turn command-line inputs into work items, in the order given (folders sorted by name).

    A spec is an existing file (image or video), a folder (its images and videos, not
    recursive), a glob (``*``, ``?``, ``[]``, ``**``), or a camera index (digits that are not
    an existing file). Anything else becomes an ``error`` item so that one bad spec fails
    alone. A file reached twice is processed once.
    """
    items: list[InputItem] = []
    seen: set[Path] = set()

    def add(item: InputItem) -> None:
        if item.path is not None:
            key = item.path.resolve()
            if key in seen:
                return
            seen.add(key)
        items.append(item)

    for spec in specs:
        path = Path(spec)
        if spec.isdigit() and not path.exists():
            items.append(InputItem(kind="camera", label=f"camera {spec}", camera=int(spec)))
        elif path.is_dir():
            try:
                found = _media_files(sorted(path.iterdir()))
            except OSError as exc:  # an unreadable folder fails alone, like a bad file
                why = exc.strerror or str(exc)
                items.append(InputItem(kind="error", label=spec, error=f"{spec}: {why}"))
                continue
            if not found:
                items.append(
                    InputItem(kind="error", label=spec, error=f"{spec}: no images or videos found")
                )
            for file in found:
                add(_file_item(file))
        elif path.is_file():
            add(_file_item(path))
        elif glob.has_magic(spec):
            found = _media_files([Path(p) for p in sorted(glob.glob(spec, recursive=True))])
            if not found:
                items.append(
                    InputItem(kind="error", label=spec, error=f"{spec}: no image or video matches")
                )
            for file in found:
                add(_file_item(file))
        elif path.exists():
            items.append(InputItem(kind="error", label=spec, error=f"{spec}: not a regular file"))
        else:
            items.append(InputItem(kind="error", label=spec, error=f"{spec}: no such file"))
    return items


# --- decoding ----------------------------------------------------------------------------------


def _check_size(path: Path | str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise TooManyPixelsError(
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


def load_image(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> U8Image:
    """Read an image file as upright BGR uint8 (H x W x 3), or raise one clear :class:`InputError`.

    Grey images are expanded to three channels; an alpha channel is flattened over white;
    16-bit samples are rounded to 8 bits; EXIF orientation is applied (phones store portraits
    sideways with a rotation tag). Animated or multi-page files give their first frame.
    """
    path = Path(path)
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


def _decode(source: Path | BinaryIO, label: str, max_pixels: int, min_side: int) -> U8Image:
    """Decode a file or an in-memory image to upright BGR uint8, or raise one InputError."""
    try:
        with Image.open(source) as im:
            _check_size(label, im.width, im.height, max_pixels, min_side)
            # exif_transpose copies even an upright image: only call it when a tag says so.
            if im.getexif().get(_ORIENTATION, 1) in range(2, 9):
                return _pillow_to_bgr(ImageOps.exif_transpose(im))
            return _pillow_to_bgr(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{label}: not an image in a format this tool reads (JPEG, PNG, WebP, BMP, TIFF, GIF)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError(f"{label}: absurd image dimensions ({exc})") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label}: corrupt or truncated image ({detail})") from None
    except MemoryError:
        raise InputError(f"{label}: not enough memory to decode this image") from None
