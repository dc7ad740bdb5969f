"""FP32 IR -> FP16-INT8 IR with NNCF post-training quantization, and the drift it costs.

``modnet-tools convert`` writes ``<root>/public/<name>/FP32/<name>.xml``; this module reads it,
runs NNCF's post-training quantization (activation ranges from calibration images, per-channel
INT8 weights, bias correction), and writes ``<root>/public/<name>/FP16-INT8/<name>.xml`` with
the layers left in floating point stored as FP16 (OMZ's "FP16-INT8" naming). The IR keeps its
contract: BGR 0..255 float32 NCHW in, the normalisation inside (NNCF puts its first quantizer
after the mean/scale, so the preprocessing stays float).

The drift is measured, not assumed: after quantizing, the INT8 IR and the FP32 IR (at f32)
run on images that were *not* used for calibration, and the mean and max absolute difference
of their mattes are reported and stored in the IR's rt_info.

Sensitive layers can stay in floating point (NNCF's ignored scope). Measured on a tame
random-weight checkpoint (README, "INT8"), keeping the final fusion convolutions (``conv_f``)
and the InstanceNorm halves of IBNorm (``MVN``) in float cut the mean drift by about a third
at a small speed cost, so that is the default (``--ignore fusion+norm``).

NNCF is imported only inside :func:`quantize_ir` (it is the optional ``[quantize]`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import cv2
import numpy as np
import numpy.typing as npt

from toolkit import __version__, paths
from toolkit.convert.graph_rewrite import REWRITE_NAME, optimize
from toolkit.errors import ToolkitError, UsageError, one_line, require
from toolkit.matting.images import DEFAULT_MAX_PIXELS
from toolkit.matting.prepost import REF_SIZE, to_network_input
from toolkit.perf.budget import (
    DEFAULT_VALIDATION,
    Budget,
    BudgetNotMet,
    BudgetResult,
    DriftStats,
    search,
)
from toolkit.perf.calibration import (
    default_calibration_set,
    folder_images,
    holdout_set,
    load_folder,
    validation_set,
)

if TYPE_CHECKING:
    import openvino as ov

INT8_PRECISION = "FP16-INT8"
SOURCE_PRECISION = "FP32"
#: Default number of calibration images (generated set, or the first N of a folder). NNCF's
#: own default is 300; the drift stopped improving well before that here (README).
DEFAULT_SUBSET_SIZE = 64
#: Held-out images the drift is measured on.
DEFAULT_HOLDOUT = 12
RT_SECTION = "modnet_tools"

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class IgnoredScope:
    """Layers NNCF leaves in floating point: name regexes and operation types."""

    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


#: Named choices for ``--ignore``. Names in the IR come from the ONNX export
#: (``/f_branch/conv_f/...``); IBNorm's InstanceNorm half becomes an ``MVN`` operation.
IGNORED_SCOPES: dict[str, IgnoredScope] = {
    "none": IgnoredScope(),
    "fusion": IgnoredScope(patterns=(r".*/f_branch/conv_f/.*",)),
    "norm": IgnoredScope(types=("MVN",)),
    "fusion+norm": IgnoredScope(patterns=(r".*/f_branch/conv_f/.*",), types=("MVN",)),
    "image-inputs+norm": IgnoredScope(
        patterns=(r".*/f_branch/conv_f/.*", r".*/hr_branch/conv_enc2x/.*", r".*/conv_hr4x\.0/.*"),
        types=("MVN",),
    ),
}
DEFAULT_IGNORE = "fusion+norm"


class QuantizationError(ToolkitError):
    """NNCF failed, or the source IR is missing or unusable."""


@dataclass(frozen=True)
class Drift:
    """How far the INT8 IR's mattes are from the FP32 IR's (at f32), over held-out images."""

    mean_abs: float
    max_abs: float
    p99_abs: float
    images: int
    inference_precision: str = "f32"

    def describe(self) -> str:
        return (
            f"mean |diff| {self.mean_abs:.4f}, max {self.max_abs:.3f}, p99 {self.p99_abs:.3f} "
            f"({self.images} held-out images)"
        )


@dataclass
class QuantizeResult:
    """What :func:`quantize_ir` did."""

    xml: Path
    source: Path
    calibration: str
    calibration_images: int
    ignore: str
    drift: list[Drift] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["xml"], data["source"] = str(self.xml), str(self.source)
        return data


# --- calibration data ----------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSpec:
    """Where calibration images come from: a folder, or the generated default set."""

    folder: Path | None
    subset_size: int
    max_pixels: int = DEFAULT_MAX_PIXELS

    def describe(self) -> str:
        if self.folder is None:
            return f"generated default set ({self.subset_size} images: augmented astronaut + synthetic portraits)"
        return f"{self.folder} (up to {self.subset_size} images)"

    def fingerprint(self) -> str:
        """Changes when the images would: file names, sizes and times, or the generator."""
        if self.folder is None:
            return f"generated:{self.subset_size}"
        digest = hashlib.sha256()
        for path in folder_images(self.folder)[: self.subset_size * 2]:
            st = path.stat()
            digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"folder:{self.subset_size}:{digest.hexdigest()[:16]}"

    def images(self, size: tuple[int, int]) -> list[U8Image]:
        """The calibration images, already resized to the network's (H, W) as uint8 (a few
        hundred of them fit in memory that way, and NNCF's passes do not decode them again)."""
        if self.folder is None:
            generated = default_calibration_set(self.subset_size)
            return [_resized(image, size) for image in generated]
        return [
            _resized(image, size)
            for _, image in load_folder(self.folder, self.subset_size, max_pixels=self.max_pixels)
        ]


def _resized(image: U8Image, size: tuple[int, int]) -> U8Image:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)


def _as_tensor(size: tuple[int, int]) -> Callable[[U8Image], F32Array]:
    def transform(image: U8Image) -> F32Array:
        return to_network_input(image, size, "stretch")

    return transform


def _input_size(model: ov.Model) -> tuple[int, int]:
    """The IR's static (H, W), or 512x512 for a dynamic IR (stretched, like OMZ's demo)."""
    shape = model.input(0).get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() == 4:
        h, w = shape[2], shape[3]
        if h.is_static and w.is_static:
            return h.get_length(), w.get_length()
    return REF_SIZE, REF_SIZE


# --- drift ---------------------------------------------------------------------------------


def measure_drift(
    reference_xml: Path,
    candidate_xml: Path,
    images: Sequence[U8Image],
    *,
    candidate_precision: str = "f32",
    device: str = "CPU",
) -> Drift:
    """Mean, max and 99th percentile |matte difference| of ``candidate_xml`` (at
    ``candidate_precision``) against ``reference_xml`` at f32, over ``images``."""
    from toolkit.matting.runtime import core, effective_precision, parse_precision

    # A precision this CPU lacks would silently run f32: measure (and label) what runs.
    candidate_precision, _ = effective_precision(parse_precision(candidate_precision), device)
    ov_core = core()
    ref_model = ov_core.read_model(reference_xml)
    size = _input_size(ref_model)
    ref = ov_core.compile_model(ref_model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    cand = ov_core.compile_model(
        str(candidate_xml), device, {"INFERENCE_PRECISION_HINT": candidate_precision}
    )
    ref_req, cand_req = ref.create_infer_request(), cand.create_infer_request()
    diffs = []
    for image in images:
        x = to_network_input(image, size, "stretch")
        a = np.array(ref_req.infer({0: x})[0], dtype=np.float32)
        b = np.array(cand_req.infer({0: x})[0], dtype=np.float32)
        diffs.append(np.abs(a - b).ravel())
    d = np.concatenate(diffs)
    return Drift(
        float(d.mean()),
        float(d.max()),
        float(np.quantile(d, 0.99)),
        len(images),
        candidate_precision,
    )


# --- quantization --------------------------------------------------------------------------


def _record(source: ov.Model, spec: CalibrationSpec, ignore: str, rewrite: bool) -> str:
    """What the INT8 IR depends on; equal records mean an identical IR can be skipped."""
    import nncf

    made_from = ""
    if source.has_rt_info([RT_SECTION, "made_from"]):
        made_from = str(source.get_rt_info([RT_SECTION, "made_from"]).astype(str))
    data = {
        "source_made_from": made_from,
        "calibration": spec.fingerprint(),
        "ignore": ignore,
        "rewrites": [REWRITE_NAME] if rewrite else [],
        "nncf": nncf.__version__,
        "tool_version": __version__,
    }
    return json.dumps(data, sort_keys=True)


def read_quantization_record(xml: Path) -> str | None:
    """The record stored in an existing INT8 IR (None when absent or unreadable)."""
    from toolkit.matting.runtime import core

    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        return None
    try:
        model = core().read_model(xml)
        if not model.has_rt_info([RT_SECTION, "quantization"]):
            return None
        return str(model.get_rt_info([RT_SECTION, "quantization"]).astype(str))
    except Exception:
        return None


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs every layer it skips at INFO, and draws its progress bars on stdout: keep its
    warnings and errors, and send the bars to stderr so stdout carries only our report."""
    import nncf

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def _nncf_scope(ignore: str) -> Any:
    import nncf

    scope = IGNORED_SCOPES[ignore]
    if not scope.patterns and not scope.types:
        return None
    # validate=False: a pattern that matches nothing (an IR from another exporter) is not an error.
    return nncf.IgnoredScope(patterns=list(scope.patterns), types=list(scope.types), validate=False)


def parse_ignore(value: str) -> str:
    if value not in IGNORED_SCOPES:
        raise UsageError(f"--ignore must be one of {', '.join(IGNORED_SCOPES)}, not {value!r}")
    return value


def quantize_ir(
    source_xml: Path,
    dest_xml: Path,
    *,
    calibration: Path | None = None,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    ignore: str = DEFAULT_IGNORE,
    holdout: Sequence[U8Image] | None = None,
    drift_precisions: Sequence[str] = ("f32",),
    force: bool = False,
    device: str = "CPU",
    rewrite: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> QuantizeResult:
    """Quantize ``source_xml`` (an FP32 IR) to ``dest_xml``; return what was done and the drift.

    ``calibration`` is a folder of images (its first ``subset_size`` readable ones are used);
    without it, a generated set of ``subset_size`` images is used. ``holdout`` are the images
    the drift is measured on (default: the generated held-out set, never calibrated on).
    When ``dest_xml`` already holds an IR made from the same FP32 IR, calibration and settings,
    quantization is skipped unless ``force`` (the drift is still measured). ``rewrite`` first
    removes IBNorm's channel splits and the concatenations feeding convolutions
    (:mod:`toolkit.convert.graph_rewrite`; exact, and faster).
    """
    require("nncf", "quantize")
    from toolkit.matting.runtime import core

    if subset_size < 1:
        raise UsageError("--subset-size must be at least 1")
    parse_ignore(ignore)
    source_xml, dest_xml = Path(source_xml), Path(dest_xml)
    if not source_xml.is_file() or not source_xml.with_suffix(".bin").is_file():
        raise _missing_fp32(source_xml)
    try:
        source = core().read_model(source_xml)
    except Exception as exc:
        raise QuantizationError(f"{source_xml}: cannot read the IR: {_first_line(exc)}") from None
    if calibration is not None:
        folder_images(calibration)  # fail early, before NNCF's import and the heavy work
    spec = CalibrationSpec(calibration, subset_size, max_pixels)
    record = _record(source, spec, ignore, rewrite)
    started = time.perf_counter()
    images = list(holdout) if holdout is not None else holdout_set(DEFAULT_HOLDOUT)
    if not force and read_quantization_record(dest_xml) == record:
        drift = [
            measure_drift(source_xml, dest_xml, images, candidate_precision=p, device=device)
            for p in drift_precisions
        ]
        return QuantizeResult(
            dest_xml, source_xml, spec.describe(), subset_size, ignore, drift, 0.0, True
        )
    data = spec.images(_input_size(source))
    if rewrite:
        optimize(source)  # exact; records what it changed in rt_info
    quantized = _run_nncf(source, data, ignore)
    quantized.set_rt_info(INT8_PRECISION, [RT_SECTION, "precision"])
    quantized.set_rt_info(record, [RT_SECTION, "quantization"])
    quantized.set_rt_info(spec.describe(), [RT_SECTION, "calibration"])
    drift = _save_measured(quantized, source_xml, dest_xml, images, drift_precisions, device)
    seconds = time.perf_counter() - started
    return QuantizeResult(
        dest_xml, source_xml, spec.describe(), len(data), ignore, drift, seconds, False
    )


def _run_nncf(source: ov.Model, data: list[U8Image], ignore: str) -> ov.Model:
    import nncf

    with _quiet_nncf():
        try:
            return nncf.quantize(
                source,
                nncf.Dataset(data, _as_tensor(_input_size(source))),
                subset_size=len(data),
                target_device=nncf.TargetDevice.CPU,
                ignored_scope=_nncf_scope(ignore),
            )
        except ToolkitError:
            raise
        except Exception as exc:
            raise QuantizationError(f"NNCF quantization failed: {_first_line(exc)}") from None


def _save_measured(
    quantized: ov.Model,
    source_xml: Path,
    dest_xml: Path,
    images: Sequence[U8Image],
    drift_precisions: Sequence[str],
    device: str,
    accept: Callable[[list[Drift]], None] | None = None,
) -> list[Drift]:
    """Save to a staging folder, measure the drift on exactly what was saved (FP16-compressed
    float layers included), record it in the IR's rt_info, then move the IR into place.
    ``accept`` may refuse the measured drift by raising: then nothing reaches ``dest_xml``."""
    import openvino as ov

    from toolkit.convert.pipeline import save_ir
    from toolkit.matting.runtime import core

    dest_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging.", dir=dest_xml.parent) as stage:
        staged = Path(stage) / dest_xml.name
        # compress_to_fp16: the layers NNCF left in float keep FP16 weights ("FP16-INT8").
        ov.save_model(quantized, str(staged), compress_to_fp16=True)
        drift = [
            measure_drift(source_xml, staged, images, candidate_precision=p, device=device)
            for p in drift_precisions
        ]
        if accept is not None:
            accept(drift)
        final = core().read_model(staged)
        final.set_rt_info(json.dumps([asdict(d) for d in drift]), [RT_SECTION, "drift"])
        save_ir(final, dest_xml, "FP16")
        del final
    return drift


def _missing_fp32(source_xml: Path) -> QuantizationError:
    """Where the FP32 IR was looked for (absolute: "cache/..." says nothing from elsewhere)
    and how to point at it."""
    return QuantizationError(
        f"no FP32 IR at {source_xml.absolute()}: point -o (or $MODNET_TOOLS_HOME) at the "
        "folder `convert -o` wrote, or run `modnet-tools convert --precision FP32` first"
    )


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 300)  # the reason, not OpenVINO's source location


@overload
def quantize_model(
    root: Path, name: str, *, output_root: Path | None = None, budget: Budget, **kwargs: Any
) -> BudgetResult: ...


@overload
def quantize_model(
    root: Path, name: str, *, output_root: Path | None = None, budget: None = None, **kwargs: Any
) -> QuantizeResult: ...


def quantize_model(
    root: Path,
    name: str,
    *,
    output_root: Path | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> QuantizeResult | BudgetResult:
    """Quantize ``<root>/public/<name>/FP32/<name>.xml`` to
    ``<output_root or root>/public/<name>/FP16-INT8/<name>.xml``: within ``budget``
    (:func:`quantize_budgeted`), or with a fixed ignored scope (:func:`quantize_ir`)."""
    source = paths.ir_xml(root, name, SOURCE_PRECISION)
    dest = paths.ir_xml(output_root if output_root is not None else root, name, INT8_PRECISION)
    if budget is not None:
        return quantize_budgeted(source, dest, budget=budget, **kwargs)
    return quantize_ir(source, dest, **kwargs)


def quantize_budgeted(
    source_xml: Path,
    dest_xml: Path,
    *,
    budget: Budget,
    calibration: Path | None = None,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    holdout: Sequence[U8Image] | None = None,
    validation: int = DEFAULT_VALIDATION,
    device: str = "CPU",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    require_faster: bool = True,
    progress: Callable[[str], None] = lambda text: None,
) -> BudgetResult:
    """The fastest INT8 IR of ``source_xml`` whose matte stays within ``budget``
    (:mod:`toolkit.perf.budget`), written to ``dest_xml``; or :class:`BudgetNotMet` and
    nothing written (not even the folder, when this call would have created it)."""
    require("nncf", "quantize")
    from toolkit.matting.runtime import core

    source_xml, dest_xml = Path(source_xml), Path(dest_xml)
    if not source_xml.is_file() or not source_xml.with_suffix(".bin").is_file():
        raise _missing_fp32(source_xml)
    if calibration is not None:
        folder_images(calibration)
    try:
        source = core().read_model(source_xml)
    except Exception as exc:
        raise QuantizationError(f"{source_xml}: cannot read the IR: {_first_line(exc)}") from None
    spec = CalibrationSpec(calibration, subset_size, max_pixels)
    size = _input_size(source)
    held = list(holdout) if holdout is not None else holdout_set(DEFAULT_HOLDOUT)
    optimize(source)  # exact; the float reference and the float layers both use it
    progress(f"calibrating on {spec.describe()}")
    quantized = _run_nncf(source, spec.images(size), "none")
    tensor = _as_tensor(size)
    model, result = search(
        source,
        quantized,
        budget,
        [tensor(image) for image in validation_set(validation, max(size))],
        [tensor(_resized(image, size)) for image in held],
        device=device,
        require_faster=require_faster,
        progress=progress,
    )
    model.set_rt_info(INT8_PRECISION, [RT_SECTION, "precision"])
    model.set_rt_info(spec.describe(), [RT_SECTION, "calibration"])

    def within(drift: list[Drift]) -> None:  # what was saved (FP16 float layers) must fit too
        if not budget.admits(drift[0].mean_abs, drift[0].p99_abs):
            raise BudgetNotMet(
                f"no INT8 IR meets --max-drift ({budget.describe()}): the saved IR measures "
                f"{drift[0].describe()}; nothing was written"
            )

    created = not dest_xml.parent.exists()
    try:
        drift = _save_measured(model, source_xml, dest_xml, held, ("f32",), device, within)
    except BaseException:
        if created and dest_xml.parent.is_dir() and not any(dest_xml.parent.iterdir()):
            dest_xml.parent.rmdir()
        raise
    result.xml = dest_xml
    result.holdout = DriftStats(
        drift[0].mean_abs, drift[0].p99_abs, drift[0].max_abs, drift[0].images
    )
    return result
