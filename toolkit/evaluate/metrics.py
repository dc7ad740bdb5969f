"""The model card's MAD / MSE, measured exactly the way Open Model Zoo's accuracy check does.

The figures quoted for MODNet (webcam: MAD 5.66, MSE 762.52) come from OMZ's accuracy checker
on the HumanMatting dataset. Reproducing them, or measuring what a fine-tune, FP16, INT8 or
bf16 inference costs against them, only means something with the same semantics, so every
step below copies OMZ's choice even where another would be more natural:

* the image is read by OpenCV (BGR) and stretched to 512x512 with ``INTER_LINEAR``, aspect
  ratio ignored (not the keep-aspect resize the authors' demos use), and fed as float;
* the ground truth is the PNG's alpha channel, resized to 512x512 by *Pillow*'s
  nearest-neighbour filter, which samples pixel centres; OpenCV's ``INTER_NEAREST`` picks
  different source pixels, so Pillow itself does this resize;
* the prediction is ``uint8(trunc(alpha * 255))`` (truncation, not rounding: 0.999 is 254);
* per image, MAD = mean |gt - pred| and MSE = mean (gt - pred)^2 in 0..255 units; over the
  dataset, the mean and the *population* standard deviation (``numpy.std``, ddof=0) of the
  per-image values, which is what the accuracy checker's regression metrics report.

The core takes the model as a plain callable (:data:`Predictor`), so it is tested with known
predictions and runs any IR, precision or runtime the caller wraps; :func:`openvino_predictor`
wraps an IR through :mod:`toolkit.matting.runtime` (imported only when called). No torch anywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from toolkit.errors import ToolkitError
from toolkit.matting.images import DEFAULT_MAX_PIXELS

#: OMZ evaluates MODNet at this square size for the image, the ground truth and the prediction.
SIZE = 512
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg"})
MATTE_SUFFIXES = (".png", ".PNG")

#: The model under test: a 512x512x3 BGR image (float32, 0..255) -> an alpha matte in [0, 1]
#: of 512x512 (extra leading axes of size 1, as in an IR's 1x1x512x512 output, are accepted).
Predictor = Callable[[NDArray[np.float32]], NDArray[Any]]

SkipKind = Literal["missing_matte", "unreadable_image", "unreadable_matte", "too_large"]
SKIP_KINDS: tuple[SkipKind, ...] = (
    "missing_matte",
    "unreadable_image",
    "unreadable_matte",
    "too_large",
)


class EvaluationError(ToolkitError):
    """The dataset or the model cannot be evaluated at all (not one bad pair)."""


class UnreadableError(ToolkitError):
    """One file of one pair could not be decoded; the pair is skipped, the run goes on."""


class OversizeError(UnreadableError):
    """One file of one pair declares more pixels than ``--max-pixels``: refused from its
    header, before any decoding (a 634-byte JPEG can declare 30000x30000)."""


def check_header(path: Path, max_pixels: int, min_side: int = 1) -> None:
    """Refuse ``path`` from its header alone when it is over the pixel limit or unreadable:
    the same limit ``infer`` applies (:func:`toolkit.matting.images.image_size`)."""
    from toolkit.matting.images import InputError, TooLargeError, image_size

    try:
        image_size(path, max_pixels=max_pixels, min_side=min_side)
    except TooLargeError as exc:
        raise OversizeError(str(exc)) from None
    except InputError as exc:
        raise UnreadableError(str(exc)) from None


@dataclass(frozen=True)
class Pair:
    """An image and its ground-truth matte (``matte`` is None when no matte was found)."""

    name: str
    image: Path
    matte: Path | None


@dataclass(frozen=True)
class Skip:
    """A pair left out of the figures, and why (reported and counted, never silent)."""

    name: str
    kind: SkipKind
    detail: str


@dataclass(frozen=True)
class Stat:
    """Mean and population standard deviation of per-image values."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(math.nan, math.nan)
        arr = np.asarray(values, dtype=np.float64)
        return cls(float(arr.mean()), float(arr.std()))  # ddof=0, as the accuracy checker

    def to_json(self) -> dict[str, float | None]:
        return {"mean": _finite(self.mean), "std": _finite(self.std)}


@dataclass(frozen=True)
class ImageScore:
    """One image's errors for one model, plus how far its matte moved from the reference's."""

    name: str
    mad: float
    mse: float
    drift_mean: float = 0.0
    drift_max: int = 0


@dataclass
class VariantResult:
    """The figures for one model/precision over the images every variant could run."""

    label: str
    scores: list[ImageScore] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.scores)

    @property
    def mad(self) -> Stat:
        return Stat.of([s.mad for s in self.scores])

    @property
    def mse(self) -> Stat:
        return Stat.of([s.mse for s in self.scores])

    @property
    def drift_mean(self) -> float:
        """Mean over images of mean |pred - reference pred| (0..255 units; 0 for the reference)."""
        return float(np.mean([s.drift_mean for s in self.scores])) if self.scores else math.nan

    @property
    def drift_max(self) -> int:
        """Largest single-pixel |pred - reference pred| over the dataset (0..255 units)."""
        return max((s.drift_max for s in self.scores), default=0)


@dataclass
class Evaluation:
    """Every variant's figures on the same images, and the pairs that were skipped."""

    variants: list[VariantResult]
    skipped: list[Skip]
    considered: int

    @property
    def images(self) -> int:
        return self.variants[0].images if self.variants else 0

    def skipped_counts(self) -> dict[str, int]:
        counts = Counter(s.kind for s in self.skipped)
        return {kind: counts.get(kind, 0) for kind in SKIP_KINDS}

    def to_json(self) -> dict[str, Any]:
        """The first variant's figures at the top level (the issue's schema), all variants below."""
        if not self.variants:
            raise EvaluationError("nothing was evaluated")
        first = self.variants[0]
        return {
            "images": first.images,
            "MAD": first.mad.to_json(),
            "MSE": first.mse.to_json(),
            "model": first.label,
            "considered": self.considered,
            "skipped": len(self.skipped),
            "skipped_by_reason": self.skipped_counts(),
            "skipped_pairs": [
                {"name": s.name, "reason": s.kind, "detail": s.detail} for s in self.skipped
            ],
            "std": "population (numpy.std, ddof=0), as OMZ's accuracy checker",
            "variants": [
                {
                    "model": v.label,
                    "images": v.images,
                    "MAD": v.mad.to_json(),
                    "MSE": v.mse.to_json(),
                    "drift_vs_first": {
                        "MAD_mean": _finite(v.mad.mean - first.mad.mean),
                        "MSE_mean": _finite(v.mse.mean - first.mse.mean),
                        "matte_mean_abs": _finite(v.drift_mean),
                        "matte_max_abs": v.drift_max,
                    },
                    "per_image": [{"name": s.name, "MAD": s.mad, "MSE": s.mse} for s in v.scores],
                }
                for v in self.variants
            ],
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- the dataset -------------------------------------------------------------------------------


def find_pairs(images_dir: Path, mattes_dir: Path, limit: int | None = None) -> list[Pair]:
    """HumanMatting's layout: ``NAME.jpg`` images, ``NAME.png`` mattes (the folders may be one).

    Images are taken in name order so that ``limit`` (the first N images) picks the same
    subset on every machine. A missing matte still yields a :class:`Pair` (with ``matte``
    None) so that it is reported and counted rather than silently dropped.
    """
    for label, folder in (("images", images_dir), ("mattes", mattes_dir)):
        if not folder.is_dir():
            raise EvaluationError(f"{label} folder {folder} does not exist or is not a folder")
    images = sorted(
        (p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )
    if not images:
        raise EvaluationError(f"no *.jpg images in {images_dir}")
    if limit is not None:
        images = images[:limit]
    pairs = []
    for image in images:
        matte = next(
            (m for m in (mattes_dir / (image.stem + s) for s in MATTE_SUFFIXES) if m.is_file()),
            None,
        )
        pairs.append(Pair(image.stem, image, matte))
    return pairs


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.uint8]:
    """The image as OMZ's reader sees it: ``cv2.imread`` in colour, BGR, EXIF orientation applied
    (after its header passed the pixel limit: OpenCV would decode whatever size it declares)."""
    check_header(path, max_pixels)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableError(f"OpenCV cannot decode {path.name}")
    return np.asarray(image, dtype=np.uint8)


def model_input(bgr: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Stretch to 512x512 bilinear (aspect ignored), as float: exactly what OMZ fed the IR."""
    resized = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return np.asarray(resized, dtype=np.float32)


def matte_channel(image: Any) -> Any:
    """The 8-bit matte inside a decoded PNG: its alpha channel, or the grey values themselves.

    RGBA/LA (and palette images with transparency) give their alpha, as OMZ's dataset uses;
    single-channel (L, 1-bit) mattes are accepted as they are; an RGB file is accepted only
    when it is grey (all channels equal), since a colour picture has no defined matte.
    """
    from PIL import Image

    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return image.getchannel("A")
    if mode == "L":
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "RGB":
        rgb = np.asarray(image)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return Image.fromarray(np.ascontiguousarray(rgb[..., 0]), mode="L")
        raise UnreadableError("a colour PNG without an alpha channel is not a matte")
    raise UnreadableError(f"unsupported matte pixel format {mode!r} (8-bit alpha or grey needed)")


def read_ground_truth(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.uint8]:
    """The matte at 512x512 via Pillow's nearest neighbour (``Image.resize(..., resample=0)``).

    Pillow samples the source pixel under each output pixel's *centre*; OpenCV's
    ``INTER_NEAREST`` uses the top-left corner and lands on other pixels whenever the size
    changes, which moves MAD by whole units on thin hair edges. Using Pillow itself keeps the
    semantics exact rather than re-deriving them.
    """
    from PIL import Image

    check_header(path, max_pixels)
    try:
        with Image.open(path) as opened:
            opened.load()
            matte = matte_channel(opened)
            resized = matte.resize((SIZE, SIZE), resample=Image.Resampling.NEAREST)
            return np.array(resized, dtype=np.uint8)
    except UnreadableError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableError(f"Pillow cannot decode {path.name}: {exc}") from exc


def quantize_prediction(alpha: NDArray[Any], where: str = "") -> NDArray[np.uint8]:
    """``uint8(trunc(alpha * 255))`` at 512x512, as OMZ's adapter turns the matte into pixels.

    The product is taken in float32 (the IR's output type). Values are clipped to 0..255
    after truncation: for a sigmoid output that changes nothing, and it keeps a reduced-precision
    overshoot (1.0039 in bf16) from wrapping around to 0 as a bare uint8 cast would.
    """
    arr = np.asarray(alpha, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (SIZE, SIZE):
        raise EvaluationError(
            f"the model returned a matte of shape {np.shape(alpha)}{where}; evaluation needs "
            f"{SIZE}x{SIZE} (an IR with a 1x3x{SIZE}x{SIZE} input)"
        )
    if not np.isfinite(arr).all():
        raise EvaluationError(f"the model returned NaN or infinite values{where}")
    return np.clip(np.trunc(arr * np.float32(255)), 0, 255).astype(np.uint8)


def image_errors(gt: NDArray[np.uint8], pred: NDArray[np.uint8]) -> tuple[float, float]:
    """(MAD, MSE) of one image in 0..255 units, in float64 so that large sums stay exact."""
    diff = gt.astype(np.float64) - pred.astype(np.float64)
    return float(np.abs(diff).mean()), float(np.square(diff).mean())


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """One pair decoded and resized, ready for every variant."""

    name: str
    input: NDArray[np.float32]
    truth: NDArray[np.uint8]


def load_pairs(
    pairs: Iterable[Pair], max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Loaded | Skip]:
    """Decode each pair, yielding a :class:`Skip` instead of failing on a bad one; a file
    over ``max_pixels`` is refused from its header (``too_large``), never decoded."""
    for pair in pairs:
        if pair.matte is None:
            yield Skip(pair.name, "missing_matte", f"no {pair.name}.png beside the mattes")
            continue
        try:
            bgr = read_image(pair.image, max_pixels)
        except OversizeError as exc:
            yield Skip(pair.name, "too_large", str(exc))
            continue
        except UnreadableError as exc:
            yield Skip(pair.name, "unreadable_image", str(exc))
            continue
        try:
            truth = read_ground_truth(pair.matte, max_pixels)
        except OversizeError as exc:
            yield Skip(pair.name, "too_large", str(exc))
            continue
        except UnreadableError as exc:
            yield Skip(pair.name, "unreadable_matte", str(exc))
            continue
        yield Loaded(pair.name, model_input(bgr), truth)


def evaluate(
    pairs: Sequence[Pair],
    predictors: Sequence[tuple[str, Predictor]],
    *,
    on_item: Callable[[Pair, Skip | None], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Evaluation:
    """Run every predictor on every readable pair; the first predictor is the reference.

    All variants see the same decoded input, so their differences are the model's alone;
    besides MAD/MSE each later variant records how far its 8-bit matte moved from the
    reference's (mean and max absolute difference), the direct measure of precision drift.
    ``on_item`` is told about each pair when it is done (with its Skip, if it was skipped):
    the CLI's progress bar and skip messages hang on it.
    """
    if not predictors:
        raise EvaluationError("no model to evaluate")
    results = [VariantResult(label) for label, _ in predictors]
    skipped: list[Skip] = []
    for pair, item in zip(pairs, load_pairs(pairs, max_pixels), strict=True):
        if isinstance(item, Skip):
            skipped.append(item)
            if on_item is not None:
                on_item(pair, item)
            continue
        reference: NDArray[np.uint8] | None = None
        for (label, predict), result in zip(predictors, results, strict=True):
            pred = quantize_prediction(predict(item.input), f" for {item.name} ({label})")
            mad, mse = image_errors(item.truth, pred)
            if reference is None:
                reference = pred
                drift_mean, drift_max = 0.0, 0
            else:
                moved = np.abs(pred.astype(np.int16) - reference.astype(np.int16))
                drift_mean, drift_max = float(moved.mean()), int(moved.max())
            result.scores.append(ImageScore(item.name, mad, mse, drift_mean, drift_max))
        if on_item is not None:
            on_item(pair, None)
    return Evaluation(results, skipped, considered=len(pairs))


def evaluate_folder(
    images_dir: Path,
    mattes_dir: Path,
    predict: Predictor,
    *,
    limit: int | None = None,
    label: str = "model",
) -> Evaluation:
    """One model on a HumanMatting-style folder: the library entry point behind the command."""
    return evaluate(find_pairs(images_dir, mattes_dir, limit), [(label, predict)])


# --- running an IR -----------------------------------------------------------------------------

INFERENCE_PRECISIONS = ("f32", "bf16")


def openvino_predictor(
    xml: Path, *, device: str = "CPU", inference_precision: str = "f32"
) -> Predictor:
    """Wrap an IR (through :class:`toolkit.matting.runtime.IRModel`) as a :data:`Predictor` at 512x512.

    Evaluation must feed the IR exactly the 512x512 stretch OMZ fed it, so this is the raw
    call: the tensor goes in as it is, no keep-aspect resize, nothing done to the output.
    An IR whose input is fixed at another size is refused rather than reshaped, since its
    figures would not be the model card's. The precision hint is always explicit because
    this CPU's plugin silently runs bf16 otherwise, which would make "FP32" figures something
    else.
    """
    if inference_precision not in INFERENCE_PRECISIONS:
        raise EvaluationError(
            f"inference precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
            f"not {inference_precision!r}"
        )
    from toolkit.matting.runtime import IRModel, parse_precision

    model = IRModel(
        xml,
        device=device,
        precision=parse_precision(inference_precision),
        performance="latency",
    )
    if model.fixed_size not in (None, (SIZE, SIZE)):
        height, width = model.fixed_size
        raise EvaluationError(
            f"{xml} takes a fixed {width}x{height} input; evaluation feeds {SIZE}x{SIZE} "
            f"(convert with a 1x3x{SIZE}x{SIZE} or dynamic input)"
        )
    model.compiled((SIZE, SIZE))  # compile now: a device or precision problem shows up front

    def predict(image: NDArray[np.float32]) -> NDArray[Any]:
        nchw = np.ascontiguousarray(image.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
        return model.infer(nchw)

    return predict
