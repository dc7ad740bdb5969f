"""``infer --fast`` (and ``serve --fast``): the fastest variant *this* CPU runs within a budget.

The fast path used to be one recipe (the INT8 IR at bf16) measured on an AVX-512 machine. On
an AVX2-only CPU it had no bf16 to use and its INT8 matte moved by 7/255 on average: a cost
nobody chose. Now the choice is made per CPU, by measurement, under an accuracy budget
(:class:`toolkit.perf.budget.Budget`, default mean 1/255 and p99 8/255 from the FP32 IR at f32):

* the candidates are what this CPU runs natively (:func:`toolkit.matting.runtime.cpu_capabilities`):
  the FP32 IR at bf16 where OpenVINO reports ``BF16``; the INT8 IR (``quantize``'s, made
  within the budget by ``quantize --max-drift``) at f32, and at bf16 where there is bf16;
  and the FP32 IR at f32, the baseline, which is always within any budget;
* each is measured here: its matte against the FP32 IR at f32 on held-out images, and its
  throughput, side by side;
* the fastest within the budget wins. The choice, with what it costs and buys, is one line
  (:meth:`FastChoice.describe`) and is kept beside the model (``fast-choice.json``, keyed by the
  CPU, the IR files and the budget) so the next start does not measure again.

Other measured facts (``benchmark --explore``): a u8 NHWC input inside the IR
(:func:`u8_nhwc_input`) gains nothing measurable; OpenVINO's THROUGHPUT hint beats one stream.
Nothing here imports torch or NNCF, and importing this module does not import OpenVINO.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import paths
from toolkit.errors import ToolkitError, UsageError
from toolkit.fsutil import atomic_path
from toolkit.perf.budget import MIN_SPEEDUP, Budget

if TYPE_CHECKING:
    import numpy.typing as npt
    import openvino as ov

    from toolkit.matting.prepost import ResizeMode
    from toolkit.matting.runtime import InferencePrecision
    from toolkit.matting.session import MattingSession

INT8_PRECISION = "FP16-INT8"
#: Held-out images each candidate's drift is measured on, and the throughput window.
CHOICE_IMAGES = 4
CHOICE_SECONDS = 1.0
CHOICE_ROUNDS = 2
CACHE_NAME = "fast-choice.json"

#: ``infer --fast``'s help text: what it does, what it may cost.
FAST_HELP = (
    "Run the fastest variant this CPU runs within an accuracy budget (default: matte within "
    "1/255 mean, 8/255 at the 99th percentile, of the FP32 IR at f32): bf16 where the CPU has "
    "it, the INT8 IR `modnet-tools quantize --max-drift` made, or both, chosen by measuring "
    "them here (once; kept beside the model). Prints what it chose and what it costs."
)


class FastModeUnavailable(ToolkitError):
    """No IR to run the fast mode on."""


@dataclass(frozen=True)
class Variant:
    """One way to run the network: an IR at an inference precision."""

    label: str
    xml: Path
    precision: InferencePrecision


@dataclass
class FastChoice:
    """What ``--fast`` runs, and what it was measured to cost and buy on this CPU."""

    label: str
    xml: Path
    precision: InferencePrecision
    fps: float
    baseline_fps: float
    drift_mean: float
    drift_p99: float
    drift_max: float
    images: int
    budget: Budget
    measured: list[dict[str, Any]]
    cached: bool = False

    @property
    def speedup(self) -> float:
        return self.fps / self.baseline_fps if self.baseline_fps else 1.0

    def describe(self) -> str:
        """The one line ``infer --fast`` prints."""
        if self.label == BASELINE_LABEL:
            return (
                f"--fast: nothing is faster than the FP32 IR at f32 within the budget "
                f"({self.budget.describe()}) on this CPU; running it (make an INT8 candidate "
                f"with `modnet-tools quantize --max-drift`)"
            )
        return (
            f"--fast: {self.label}, {self.speedup:.2f}x the FP32 IR at f32 measured here; matte "
            f"vs FP32 at f32: mean {self.drift_mean:.4f}, p99 {self.drift_p99:.3f} on "
            f"{self.images} held-out images (budget {self.budget.describe()})"
            + (" [measured earlier]" if self.cached else "")
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["xml"] = str(self.xml)
        data["budget"] = asdict(self.budget)
        data.pop("cached")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FastChoice:
        data = dict(data)
        data["xml"] = Path(data["xml"])
        data["budget"] = Budget(**data["budget"])
        return cls(**data, cached=True)


BASELINE_LABEL = "FP32 IR at f32"


def variants(
    root: Path, name: str, model: Path | None = None, device: str = "CPU"
) -> tuple[Variant, list[Variant]]:
    """The baseline (FP32 IR at f32, or ``model`` at f32) and the candidates this CPU runs
    natively: ``model``, or the FP32 IR and the INT8 IR when it exists, at f32 and bf16."""
    from toolkit.matting.runtime import cpu_capabilities

    hints: list[InferencePrecision] = ["f32"]
    if cpu_capabilities(device).bf16:
        hints.append("bf16")
    if model is not None:
        base = Variant(BASELINE_LABEL, model, "f32")
        return base, [Variant(f"{model.name} at {h}", model, h) for h in hints if h != "f32"]
    fp32 = paths.ir_xml(root, name, "FP32")
    if not fp32.is_file():
        raise FastModeUnavailable(
            f"--fast needs the FP32 IR at {fp32}: run `modnet-tools convert` first"
        )
    base = Variant(BASELINE_LABEL, fp32, "f32")
    int8 = paths.ir_xml(root, name, INT8_PRECISION)
    candidates = [Variant("FP32 IR at bf16", fp32, "bf16")] if "bf16" in hints else []
    if int8.is_file() and int8.with_suffix(".bin").is_file():
        candidates += [Variant(f"INT8 IR at {h}", int8, h) for h in hints]
    return base, candidates


def _cache_key(base: Variant, candidates: Sequence[Variant], budget: Budget, device: str) -> str:
    """Changes with the CPU, OpenVINO, the IR files and the budget: any of them can change
    the answer."""
    import openvino as ov

    from toolkit.matting.runtime import cpu_capabilities

    caps = cpu_capabilities(device)
    parts: list[str] = [
        platform.processor() or platform.machine(),
        _cpu_model(),
        ",".join(sorted(caps.features)),
        ",".join(sorted(caps.openvino)),
        ov.get_version(),
        device,
        json.dumps(asdict(budget)),
    ]
    for variant in (base, *candidates):
        stat = variant.xml.stat()
        parts.append(
            f"{variant.xml.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{variant.precision}"
        )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return ""


def _drift(
    variant: Variant,
    images: Sequence[npt.NDArray[Any]],
    references: Sequence[npt.NDArray[Any]],
    device: str,
) -> tuple[float, float, float]:
    """(mean, p99, max) |matte difference| of one variant against the reference mattes."""
    import numpy as np

    from toolkit.matting.runtime import core

    compiled = core().compile_model(
        str(variant.xml), device, {"INFERENCE_PRECISION_HINT": variant.precision}
    )
    request = compiled.create_infer_request()
    diffs = np.concatenate(
        [
            np.abs(np.array(request.infer({0: x})[0], np.float32) - ref).ravel()
            for x, ref in zip(images, references, strict=True)
        ]
    )
    return float(diffs.mean()), float(np.quantile(diffs, 0.99)), float(diffs.max())


def choose_fast(
    root: Path,
    name: str,
    *,
    model: Path | None = None,
    device: str = "CPU",
    budget: Budget | None = None,
    use_cache: bool = True,
    progress: Callable[[str], None] = lambda text: None,
) -> FastChoice:
    """Measure the candidates on this CPU and return the fastest within ``budget``."""
    import numpy as np

    from toolkit.matting.prepost import to_network_input
    from toolkit.matting.runtime import core
    from toolkit.perf.budget import side_by_side
    from toolkit.perf.calibration import holdout_set

    budget = budget or Budget()
    base, candidates = variants(root, name, model, device)
    cache = base.xml.parent.parent / CACHE_NAME
    key = _cache_key(base, candidates, budget, device)
    if use_cache:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return FastChoice.from_json(json.loads(cache.read_text())[key])
    shape = core().read_model(base.xml).input(0).get_partial_shape()
    size = (
        (shape[2].get_length(), shape[3].get_length())
        if shape.rank.is_static and shape[2].is_static and shape[3].is_static
        else (512, 512)
    )
    images = [to_network_input(i, size, "stretch") for i in holdout_set(CHOICE_IMAGES, max(size))]
    reference = core().compile_model(str(base.xml), device, {"INFERENCE_PRECISION_HINT": "f32"})
    request = reference.create_infer_request()
    refs = [np.array(request.infer({0: x})[0], np.float32) for x in images]
    progress(f"measuring {len(candidates) + 1} variants for --fast on this CPU (once)")
    measured: list[dict[str, Any]] = []
    results: list[tuple[Variant, tuple[float, float, float, float]]] = []
    speeds = side_by_side(
        [(str(v.xml), v.precision) for v in (base, *candidates)],
        images[0],
        device,
        rounds=CHOICE_ROUNDS,
        seconds=CHOICE_SECONDS,
    )
    for variant, fps in zip((base, *candidates), speeds, strict=True):
        mean, p99, worst = _drift(variant, images, refs, device)
        results.append((variant, (fps, mean, p99, worst)))
        measured.append(
            {
                "label": variant.label,
                "xml": str(variant.xml),
                "precision": variant.precision,
                "fps": fps,
                "drift_mean": mean,
                "drift_p99": p99,
                "drift_max": worst,
                "within_budget": budget.admits(mean, p99),
            }
        )
    baseline_fps = results[0][1][0]
    fitting = [(v, n) for v, n in results if budget.admits(n[1], n[2])]
    winner, (fps, mean, p99, worst) = max(fitting, key=lambda item: item[1][0])
    if winner is not base and fps <= baseline_fps * MIN_SPEEDUP:
        winner, (fps, mean, p99, worst) = results[0]
    choice = FastChoice(
        winner.label if winner is not base else BASELINE_LABEL,
        winner.xml,
        winner.precision,
        fps,
        baseline_fps,
        mean,
        p99,
        worst,
        len(images),
        budget,
        measured,
    )
    if use_cache:
        _remember(cache, key, choice)
    return choice


def _remember(cache: Path, key: str, choice: FastChoice) -> None:
    """Keep the choice beside the model (best effort: a read-only model folder is fine)."""
    with contextlib.suppress(OSError, ValueError):
        known: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(cache.read_text())
            known = loaded if isinstance(loaded, dict) else {}
        known[key] = choice.to_json()
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(known, indent=2) + "\n")


def check_fast_options(precision: str | None, inference_precision: str) -> None:
    """``--precision`` and a non-default ``--inference-precision`` contradict ``--fast``."""
    if precision is not None:
        raise UsageError("--fast picks the IR itself; drop --precision (or pass --model)")
    if inference_precision.lower() != "f32":
        raise UsageError("--fast sets the inference precision itself; drop --inference-precision")


def fast_session(
    root: Path,
    name: str,
    *,
    model: Path | None = None,
    device: str = "CPU",
    budget: Budget | None = None,
    resize: ResizeMode = "stretch",
    network_size: tuple[int, int] | None = None,
    requests: int = 0,
    progress: Callable[[str], None] = lambda text: None,
) -> tuple[MattingSession, FastChoice]:
    """A throughput session on what :func:`choose_fast` picks (for ``serve --fast`` and
    the benchmark), and the choice (print ``choice.describe()``)."""
    from toolkit.matting.session import MattingSession

    choice = choose_fast(root, name, model=model, device=device, budget=budget, progress=progress)
    session = MattingSession.from_xml(
        choice.xml,
        device=device,
        precision=choice.precision,
        resize=resize,
        performance="throughput",
        requests=requests,
        network_size=network_size,
    )
    return session, choice


def u8_nhwc_input(model: ov.Model) -> ov.Model:
    """The same network taking the OpenCV frame as is: uint8, N x H x W x 3 (BGR).

    The conversion to float and the transpose to NCHW move into the compiled graph, where
    OpenVINO fuses them with the first layers' reorders; the host hands over the frame without
    touching it. The IR's own normalisation (mean, scale, channel reversal) is untouched.
    Measured (``benchmark --explore``): no gain, so the IR's float contract stays.
    """
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    info = ppp.input(0)
    info.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    info.model().set_layout(ov.Layout("NCHW"))
    return ppp.build()
