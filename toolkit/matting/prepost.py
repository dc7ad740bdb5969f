"""Pre- and post-processing around the network: resize rules, alpha handling, compositing.

numpy and OpenCV only, so that everything here is usable (and testable) without OpenVINO or
torch. Two resize rules exist because two reference pipelines exist:

* ``stretch`` is what Open Model Zoo's background-subtraction demo does: the frame is resized
  to the IR's fixed input size (bilinear) ignoring the aspect ratio, and the alpha is resized
  back bilinearly. Results match what OMZ users already get.
* ``keep-aspect`` is the MODNet authors' rule: the short side goes to 512 when the long side
  is under 512 or the short side is over 512, both sides are then floored to multiples of 32
  (the network's stride), with area interpolation. Faces keep their proportions, which the
  network was trained on.

The alpha is always returned at the input's size; compositing follows the demo's formula
``frame * a + background * (1 - a)``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from toolkit.errors import ToolkitError, UsageError

# The network-size bound lives with the network (convert applies it too); re-exported here,
# beside the resize rules that produce the sizes it judges.
from toolkit.model.limits import MAX_NETWORK_PIXELS as MAX_NETWORK_PIXELS
from toolkit.model.limits import MAX_NETWORK_SIDE as MAX_NETWORK_SIDE
from toolkit.model.limits import NetworkSizeError as NetworkSizeError
from toolkit.model.limits import check_network_size as check_network_size
from toolkit.model.limits import network_size_problem as network_size_problem

ResizeMode = Literal["stretch", "keep-aspect"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("stretch", "keep-aspect")

#: The network's stride: H and W of its input must be multiples of this.
SIZE_MULTIPLE = 32
#: The authors' reference size for the short side.
REF_SIZE = 512
#: OMZ's demo default background, BGR.
OMZ_BACKGROUND_BGR: tuple[int, int, int] = (155, 255, 120)

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

BackgroundFit = Literal["cover", "contain", "stretch"]
BACKGROUND_FITS: tuple[BackgroundFit, ...] = ("cover", "contain", "stretch")
#: A video background: a factory of endless ``(seconds, BGR frame)`` streams (looping).
ClipFactory = Callable[[], Generator[tuple[float, U8Image], None, None]]


class NonFiniteMatteError(ToolkitError):
    """The network returned NaN or infinity: a broken IR, never a matte to write."""


def require_finite(matte: npt.NDArray[np.floating], what: str = "the model") -> None:
    """Refuse a matte holding NaN or infinity (clipping would turn it into a plausible 0 or 1)."""
    if not np.isfinite(matte).all():
        bad = int(np.size(matte) - np.count_nonzero(np.isfinite(matte)))
        raise NonFiniteMatteError(
            f"{what} returned {bad} non-finite (NaN or infinite) matte values of "
            f"{np.size(matte)}: the IR is broken or not a matting network"
        )


def parse_resize(value: str) -> ResizeMode:
    """Validate a ``--resize`` value (``stretch`` or ``keep-aspect``)."""
    for mode in RESIZE_MODES:
        if value == mode:
            return mode
    raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, not {value!r}")


def keep_aspect_size(height: int, width: int, ref: int = REF_SIZE) -> tuple[int, int]:
    """The network input size (H, W) for an image under the authors' keep-aspect rule.

    If the long side is under ``ref`` or the short side over it, the short side becomes
    ``ref`` and the long side scales alike; otherwise the size is kept. Both sides are then
    floored to multiples of 32 (never below 32), because the network needs it.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) < ref or min(height, width) > ref:
        if width >= height:
            new_h, new_w = ref, int(width / height * ref)
        else:
            new_h, new_w = int(height / width * ref), ref
    else:
        new_h, new_w = height, width
    new_h = max(SIZE_MULTIPLE, new_h - new_h % SIZE_MULTIPLE)
    new_w = max(SIZE_MULTIPLE, new_w - new_w % SIZE_MULTIPLE)
    return new_h, new_w


def network_size(
    height: int, width: int, mode: ResizeMode, fixed: tuple[int, int] | None
) -> tuple[int, int]:
    """The (H, W) the network runs at for an image of ``height`` x ``width``.

    ``fixed`` is the IR's static spatial size, or None for an IR with dynamic H/W. ``stretch``
    uses the fixed size (512x512 for a dynamic IR, the size OMZ's IR has); ``keep-aspect``
    ignores it (the runtime reshapes the IR).
    The size is checked against :data:`MAX_NETWORK_PIXELS` (:class:`NetworkSizeError`).
    """
    if mode == "stretch":
        size = fixed if fixed is not None else (REF_SIZE, REF_SIZE)
        check_network_size(*size, hint="the IR's own input size")
    else:
        size = keep_aspect_size(height, width)
        check_network_size(
            *size, hint=f"the {width}x{height} input under --resize keep-aspect; use stretch"
        )
    return size


def to_network_input(bgr: U8Image, size: tuple[int, int], mode: ResizeMode) -> F32Array:
    """Resize a BGR uint8 frame to ``size`` (H, W) and lay it out as a 1x3xHxW float32 tensor.

    The pixels stay BGR 0..255: the IR reverses the channels and normalises internally, as
    OMZ's IR does. The resize is done on the uint8 frame (like the demo, which hands OpenCV's
    uint8 frames to its resize) with bilinear for ``stretch`` and area for ``keep-aspect``.
    """
    height, width = size
    interp = cv2.INTER_LINEAR if mode == "stretch" else cv2.INTER_AREA
    if bgr.shape[:2] != (height, width):
        bgr = np.asarray(cv2.resize(bgr, (width, height), interpolation=interp), np.uint8)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def alpha_to_input_size(alpha: npt.NDArray[np.floating], height: int, width: int) -> F32Array:
    """Resize the network's matte (any of NxCxHxW / HxW) back to ``height`` x ``width``.

    Bilinear, as both reference pipelines do; clipped to [0, 1] because interpolation of a
    sigmoid output stays inside it but reduced-precision inference may overshoot by an ulp.
    """
    matte = np.asarray(alpha, dtype=np.float32).reshape(alpha.shape[-2:])
    if matte.shape != (height, width):
        matte = np.asarray(
            cv2.resize(matte, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
        )
    return np.clip(matte, 0.0, 1.0, out=matte)


def quantize_alpha(alpha: F32Array) -> U8Image:
    """The 8-bit matte written to ``<stem>_alpha.png``: round(alpha * 255), half to even.

    OpenCV's saturating convert does it in one vectorised pass (15x faster than numpy's
    rint + astype, which matters at video rates); alpha is already clipped to [0, 1].
    """
    return np.asarray(cv2.convertScaleAbs(alpha, alpha=255.0), np.uint8)


# --- backgrounds ------------------------------------------------------------------------------

_NAMED_BGR: dict[str, tuple[int, int, int]] = {
    "omz": OMZ_BACKGROUND_BGR,
    "default": OMZ_BACKGROUND_BGR,
    "green": (0, 255, 0),
    "blue": (255, 0, 0),
    "red": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
}


def parse_fit(value: str) -> BackgroundFit:
    """Validate ``--background-fit``."""
    for fit in BACKGROUND_FITS:
        if value.lower() == fit:
            return fit
    raise UsageError(f"--background-fit must be one of {', '.join(BACKGROUND_FITS)}, not {value!r}")


def fit_image(image: U8Image, width: int, height: int, fit: BackgroundFit) -> U8Image:
    """``image`` at ``width`` x ``height``: ``cover`` scales it to fill the frame and crops the
    overflow evenly (no distortion, no bars), ``contain`` scales it to fit whole and pads
    with black, ``stretch`` resizes to the frame ignoring the aspect ratio (OMZ's demo)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image
    if fit == "stretch":
        return _resize(image, width, height)
    scale = (max if fit == "cover" else min)(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    if fit == "cover":
        new_w, new_h = max(new_w, width), max(new_h, height)
        resized = _resize(image, new_w, new_h)
        x, y = (new_w - width) // 2, (new_h - height) // 2
        return np.ascontiguousarray(resized[y : y + height, x : x + width])
    new_w, new_h = min(new_w, width), min(new_h, height)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = _resize(image, new_w, new_h)
    return canvas


def _resize(image: U8Image, width: int, height: int) -> U8Image:
    shrink = width * height < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interp), np.uint8)


@dataclass(frozen=True)
class Background:
    """What replaces the background: a solid colour, an image, a video, or the frame blurred.

    Exactly one of ``color`` (BGR), ``image`` (a BGR uint8 array), ``clip`` (a video, see
    :data:`ClipFactory`) and ``blur`` (the kernel size K of a K x K box blur) is set. Images
    and videos are fitted to each frame by ``fit``. :meth:`render` gives the background of a
    still image (a video's first frame); :meth:`player` plays a video along a stream.
    """

    color: tuple[int, int, int] | None = None
    image: U8Image | None = None
    blur: int | None = None
    description: str = ""
    clip: ClipFactory | None = None
    fit: BackgroundFit = "cover"
    _fitted: dict[tuple[int, int], U8Image] = field(default_factory=dict, compare=False, repr=False)

    def render(self, frame: U8Image) -> U8Image:
        """The background as a BGR uint8 image of the frame's size."""
        height, width = frame.shape[:2]
        if self.color is not None:
            return np.broadcast_to(np.array(self.color, dtype=np.uint8), (height, width, 3))
        if self.image is not None or self.clip is not None:
            fitted = self._fitted.get((height, width))  # the same size, frame after frame
            if fitted is None:
                fitted = fit_image(self._still(), width, height, self.fit)
                self._fitted.clear()
                self._fitted[(height, width)] = fitted
            return fitted
        assert self.blur is not None
        return np.asarray(cv2.blur(frame, (self.blur, self.blur)), np.uint8)

    def _still(self) -> U8Image:
        if self.image is not None:
            return self.image
        assert self.clip is not None
        frames = self.clip()
        try:
            return next(frames)[1]
        finally:
            frames.close()

    def player(self) -> BackgroundPlayer:
        """A renderer for one stream of frames (a video background starts over for each)."""
        return BackgroundPlayer(self)


class BackgroundPlayer:
    """The background for each frame of a stream at its time: a video background plays along
    (its frame shown at an input frame's time is the last one due by then, counted from the
    first input frame), looping when it is shorter; other backgrounds are as for images."""

    def __init__(self, background: Background) -> None:
        self.background = background
        self._frames: Generator[tuple[float, U8Image], None, None] | None = None
        self._start = 0.0
        self._current: tuple[float, U8Image] | None = None
        self._next: tuple[float, U8Image] | None = None
        self._fitted: U8Image | None = None

    def render(self, frame: U8Image, seconds: float) -> U8Image:
        clip = self.background.clip
        if clip is None:
            return self.background.render(frame)
        if self._frames is None:
            self._frames = clip()
            self._current, self._next = next(self._frames), next(self._frames, None)
            self._start = seconds
        elapsed = seconds - self._start
        changed = False
        while self._next is not None and self._next[0] <= elapsed + 1e-9:
            self._current, self._next = self._next, next(self._frames, None)
            changed = True
        height, width = frame.shape[:2]
        if changed or self._fitted is None or self._fitted.shape[:2] != (height, width):
            assert self._current is not None
            self._fitted = fit_image(self._current[1], width, height, self.background.fit)
        return self._fitted

    def close(self) -> None:
        """Stop the background's decoding (and close its file)."""
        if self._frames is not None:
            self._frames.close()
        self._frames = None


def _parse_triplet(text: str, order: Literal["rgb", "bgr"], spec: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise UsageError(
            f"--background {spec!r}: a colour needs three integers 0..255 separated by commas"
        )
    a, b, c = (int(p) for p in parts)
    return (c, b, a) if order == "rgb" else (a, b, c)


def parse_background(
    spec: str,
    load_image: Callable[[Path], U8Image] | None = None,
    *,
    fit: BackgroundFit = "cover",
    load_clip: Callable[[Path], ClipFactory | None] | None = None,
) -> Background:
    """Parse ``--background``: a colour, ``blur:K``, an image file or a video file.

    Colours: ``#RRGGBB`` (web notation, RGB), ``R,G,B`` or ``rgb:R,G,B`` (RGB), ``bgr:B,G,R``
    (OpenCV order, as OMZ writes its default), or a name (``omz``/``default`` is OMZ's
    BGR (155, 255, 120), also ``green``, ``blue``, ``red``, ``white``, ``black``, ``gray``).
    ``load_image`` is the image loader (a callable path -> BGR uint8) used for files, and
    ``load_clip`` opens a video file (None when the file is not a video); both are passed in
    so that this module stays free of file-format concerns. ``fit`` is how an image or video
    is fitted to the frame (see :func:`fit_image`).
    """
    text = spec.strip()
    lower = text.lower()
    if lower in _NAMED_BGR:
        return Background(color=_NAMED_BGR[lower], description=lower)
    if lower.startswith("blur:"):
        k = lower[5:]
        if not k.isdigit() or not 1 <= int(k) <= 1001:
            raise UsageError(
                f"--background {spec!r}: blur:K needs a kernel size K between 1 and 1001"
            )
        return Background(blur=int(k), description=f"blur {k}x{k}")
    if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        r, g, b = (int(text[i : i + 2], 16) for i in (1, 3, 5))
        return Background(color=(b, g, r), description=text)
    if lower.startswith(("rgb:", "bgr:")):
        order: Literal["rgb", "bgr"] = "rgb" if lower.startswith("rgb:") else "bgr"
        return Background(color=_parse_triplet(text[4:], order, spec), description=text)
    if re.fullmatch(r"[\d\s]+,[\d\s]+,[\d\s]+", text):
        return Background(color=_parse_triplet(text, "rgb", spec), description=f"rgb {text}")
    path = Path(text)
    # Without a loader (the server) a client's text is never looked up on disk.
    if (load_image is not None or load_clip is not None) and path.is_file():
        clip = load_clip(path) if load_clip is not None else None
        if clip is not None:
            return Background(clip=clip, fit=fit, description=f"video {path}")
        if load_image is not None:
            return Background(image=load_image(path), fit=fit, description=str(path))
    raise UsageError(
        f"--background {spec!r}: not a colour (#RRGGBB, R,G,B, bgr:B,G,R, a name such as omz), "
        "blur:K, or an existing image or video file"
    )


# --- compositing ------------------------------------------------------------------------------


def composite(frame: U8Image, alpha8: U8Image, background: U8Image) -> U8Image:
    """``frame * a + background * (1 - a)`` with ``a = alpha8 / 255``, rounded to uint8.

    The 8-bit alpha (the one written to ``_alpha.png``) is used rather than the float matte,
    so the composite file can be recomputed exactly from the files the toolkit writes.

    Computed in integers, which gives exactly the rounded float result: with
    ``x = frame * A + background * (255 - A)`` the value is ``x / 255``, which is never a
    half (``2x`` is even, ``255 * odd`` is odd), so ``rint(x / 255) == (x + 127) // 255``.
    A solid colour (what :meth:`Background.render` returns as a broadcast view) goes through
    per-channel lookup tables; at 720p that is 3x cheaper than float arithmetic, which
    matters for video, where compositing competes with inference for the same cores.
    """
    if background.ndim == 3 and background.strides[:2] == (0, 0):
        tables = _blend_tables(tuple(int(v) for v in background[0, 0]))
        index = alpha8.astype(np.uint16) << 8
        return np.dstack([tables[c][index | frame[..., c]] for c in range(3)])
    a = alpha8[..., np.newaxis].astype(np.uint16)
    x = frame.astype(np.uint16) * a
    x += background.astype(np.uint16) * (np.uint16(255) - a)
    x += np.uint16(127)
    x //= np.uint16(255)
    return x.astype(np.uint8)


_BLEND_TABLES: dict[tuple[int, ...], npt.NDArray[np.uint8]] = {}
#: Colours whose tables are kept (192 KiB each): a server's clients may ask for any of 16.7
#: million colours, and an unbounded cache would grow with each new one.
_BLEND_TABLES_KEPT = 16
_BLEND_LOCK = threading.Lock()


def _blend_tables(colour: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """For each channel of ``colour``: the composite of value v at alpha A, at ``A << 8 | v``."""
    tables = _BLEND_TABLES.get(colour)
    if tables is None:
        a = np.arange(256, dtype=np.uint32)[:, np.newaxis]
        v = np.arange(256, dtype=np.uint32)[np.newaxis, :]
        tables = np.stack(
            [((v * a + c * (255 - a) + 127) // 255).astype(np.uint8).ravel() for c in colour]
        )
        with _BLEND_LOCK:
            while len(_BLEND_TABLES) >= _BLEND_TABLES_KEPT:
                del _BLEND_TABLES[next(iter(_BLEND_TABLES))]  # the oldest
            _BLEND_TABLES[colour] = tables
    return tables


def cutout(frame: U8Image, alpha8: U8Image) -> U8Image:
    """The BGRA cut-out: the frame's colours with the matte as (straight, unpremultiplied) alpha."""
    bgra = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA), np.uint8)  # 10x faster than dstack
    bgra[..., 3] = alpha8
    return bgra


def grey_to_bgr(alpha8: U8Image) -> U8Image:
    """The matte as a 3-channel image (for video writers and side-by-side views)."""
    return np.asarray(cv2.cvtColor(alpha8, cv2.COLOR_GRAY2BGR), np.uint8)


def side_by_side(left: U8Image, right: U8Image) -> U8Image:
    """Input and result next to each other (same height), for a quick visual check."""
    if left.ndim == 2:
        left = grey_to_bgr(left)
    if right.ndim == 2:
        right = grey_to_bgr(right)
    return np.hstack((left, right))


# --- one-frame-delay smoothing ------------------------------------------------------------------


class OneFrameDelay:
    """The paper's OFD trick against flicker in video, streaming with a one-frame delay.

    Where the previous and next frames' alphas agree within ``tolerance`` and the current
    frame's alpha differs from both by more than it, the current value is replaced by the mean
    of its neighbours. Feed alphas in order with :meth:`push` (it returns the previous frame's
    smoothed alpha, or None for the first call) and call :meth:`flush` at the end for the last
    frame, which is passed through unchanged like the first one.
    """

    def __init__(self, tolerance: float = 0.1) -> None:
        if not 0.0 < tolerance < 1.0:
            raise UsageError(f"the OFD tolerance must be between 0 and 1, not {tolerance}")
        self.tolerance = np.float32(tolerance)
        self._prev: F32Array | None = None
        self._cur: F32Array | None = None

    def push(self, alpha: F32Array) -> F32Array | None:
        """Add the next frame's alpha; return the smoothed alpha of the frame before it."""
        out: F32Array | None = None
        if self._cur is not None:
            out = self._cur if self._prev is None else self.smooth(self._prev, self._cur, alpha)
        self._prev, self._cur = self._cur, alpha
        return out

    def flush(self) -> F32Array | None:
        """The last frame's alpha (unchanged: it has no next frame)."""
        out, self._prev, self._cur = self._cur, None, None
        return out

    def smooth(self, prev: F32Array, cur: F32Array, nxt: F32Array) -> F32Array:
        """One OFD step on three consecutive alphas of the same shape."""
        tol = self.tolerance
        fix = (np.abs(prev - nxt) <= tol) & (np.abs(cur - prev) > tol) & (np.abs(cur - nxt) > tol)
        if not fix.any():
            return cur
        return np.where(fix, (prev + nxt) * np.float32(0.5), cur).astype(np.float32)


# --- a smaller (or larger) network input for speed ---------------------------------------------

#: Bounds on ``--network-size``: the same limits every network input size is held to (a
#: 2048x2048 input already needs about 1.3 GB on the CPU plugin).
MAX_NETWORK_SIDE_PIXELS = MAX_NETWORK_PIXELS  # the one bound of toolkit.model.limits
MAX_NETWORK_SIDE_LENGTH = MAX_NETWORK_SIDE


def parse_network_size(value: str) -> tuple[int, int]:
    """``--network-size WxH`` -> (H, W): both multiples of 32 (the network's stride), bounded.

    Live-video tools run MODNet at 320x192 or 256x256 rather than 512x512: about a quarter
    to a third of the arithmetic, with the matte resized back to the frame.
    """
    text = value.strip().lower().replace(" ", "")
    width_text, sep, height_text = text.partition("x")
    if not sep or not width_text.isdigit() or not height_text.isdigit():
        raise UsageError(f"--network-size takes WIDTHxHEIGHT (e.g. 320x192), not {value!r}")
    width, height = int(width_text), int(height_text)
    if (
        width < SIZE_MULTIPLE
        or height < SIZE_MULTIPLE
        or width % SIZE_MULTIPLE
        or height % SIZE_MULTIPLE
    ):
        raise UsageError(
            f"--network-size {value}: width and height must be multiples of {SIZE_MULTIPLE} "
            f"(at least {SIZE_MULTIPLE}), e.g. 320x192, 384x384, 512x512"
        )
    problem = network_size_problem(height, width)
    if problem is not None:
        raise UsageError(f"--network-size {value}: {problem}; it was trained at 512")
    return height, width
