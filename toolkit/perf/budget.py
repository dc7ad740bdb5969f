"""``quantize --max-drift``: the fastest INT8 IR whose matte stays within an accuracy budget.

The budget is the matte's mean absolute difference from the FP32 IR at f32 (default 1/255:
one grey level on average), with a bound on the 99th percentile (default 8/255) so that a small
region cannot go badly wrong behind a good mean.

How it is found (a sensitivity search of our own; NNCF's ``quantize_with_accuracy_control``
was tried first and measured: on two shared cores its layer ranking alone ran for over 15
minutes on the 512x512 network without finishing, because it re-ranks all 154 quantizers one by
one):

1. NNCF quantizes the whole network once (every convolution INT8).
2. Its quantizers are grouped by the network's stages (each backbone block, each head of the
   low-, high-resolution and fusion branches). For each group, the drift is measured with that
   group alone back in float: how much of the error it causes.
3. Groups go back to float most harmful first; a binary search over how many finds the fewest
   reverted groups (the most INT8 left: the fastest) whose drift on the *validation* images
   is within the budget less a safety margin.
4. The result is measured on the *held-out* images (neither calibration nor validation); if it
   is over the budget there, the next group goes back to float, until it fits.
5. If only a network without any INT8 left would fit, or the IR within budget is not faster
   than the FP32 IR at f32 measured side by side, the budget cannot be met by INT8: nothing is
   written and the report says so.

A group "back in float" means its activation quantizers removed and its convolutions' original
FP32 weights restored. The accepted drift, the speeds and the reverted groups are recorded in
the IR's rt_info (``modnet_tools/budget``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from toolkit.errors import ToolkitError, UsageError

if TYPE_CHECKING:
    import openvino as ov

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

DEFAULT_MAX_DRIFT = 1 / 255
DEFAULT_MAX_P99 = 8 / 255
#: The search aims this far under the budget on validation images, so that the held-out
#: images (and a user's own) land within it too.
SEARCH_MARGIN = 0.8
#: Validation images the search measures on (a third generated set, see calibration.py).
DEFAULT_VALIDATION = 8
RT_BUDGET = ["modnet_tools", "budget"]
#: An INT8 IR must beat the FP32 IR by this much, side by side, to be worth writing (less is
#: within what a shared machine's noise gives between two identical networks).
MIN_SPEEDUP = 1.05


class BudgetNotMet(ToolkitError):
    """No INT8 IR within the drift budget is faster than the FP32 IR: nothing was written."""


@dataclass(frozen=True)
class Budget:
    """The accuracy a fast path may cost: mean and 99th-percentile |matte difference| from
    the FP32 IR at f32, on a 0..1 scale."""

    mean: float = DEFAULT_MAX_DRIFT
    p99: float = DEFAULT_MAX_P99

    def admits(self, mean: float, p99: float, margin: float = 1.0) -> bool:
        return mean <= self.mean * margin and p99 <= self.p99 * margin

    def describe(self) -> str:
        return f"mean <= {self.mean:.4f} ({self.mean * 255:.2g}/255), p99 <= {self.p99:.3f}"


def parse_drift(value: str, option: str) -> float:
    """``0.004``, ``1/255`` or ``1%``: a drift on the matte's 0..1 scale."""
    text = value.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            result = float(num) / float(den)
        elif text.endswith("%"):
            result = float(text[:-1]) / 100
        else:
            result = float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(
            f"{option} takes a number like 0.004, 1/255 or 0.4%, not {value!r}"
        ) from None
    if not 0 < result < 1:
        raise UsageError(f"{option} must be between 0 and 1 (the matte's scale), not {value!r}")
    return result


@dataclass(frozen=True)
class DriftStats:
    mean: float
    p99: float
    max: float
    images: int

    def describe(self) -> str:
        return (
            f"mean |diff| {self.mean:.4f}, p99 {self.p99:.3f}, max {self.max:.3f} "
            f"({self.images} images)"
        )


@dataclass
class BudgetResult:
    """What the search found: the IR (or nothing), its drift and speed, what stayed float."""

    xml: Path | None
    budget: Budget
    validation: DriftStats
    holdout: DriftStats
    reverted: list[str]
    groups: int
    int8_fps: float
    fp32_fps: float
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.int8_fps / self.fp32_fps if self.fp32_fps else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["xml"] = str(self.xml) if self.xml is not None else None
        data["speedup"] = self.speedup
        return data


# --- the network's stages ------------------------------------------------------------------

_BACKBONE = re.compile(r"/lr_branch/backbone/(?:model/)?features\.(\d+)/")
_BRANCH = re.compile(r"/(lr_branch|hr_branch|f_branch)/([A-Za-z0-9_]+)")


def stage_of(name: str) -> str:
    """The stage a layer belongs to, from its ONNX-export name: ``backbone.03``,
    ``hr_branch.conv_hr2x``, ``f_branch.conv_f``...; ``input`` for what precedes them."""
    match = _BACKBONE.search(name)
    if match:
        return f"backbone.{int(match.group(1)):02d}"
    match = _BRANCH.search(name)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    return "input"


def quantizer_groups(model: ov.Model) -> dict[str, list[str]]:
    """Activation quantizers (FakeQuantize) by the stage of the layer they feed."""
    groups: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        consumers = sorted(
            t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs()
        )
        stage = stage_of(consumers[0]) if consumers else "input"
        groups.setdefault(stage, []).append(op.get_friendly_name())
    return groups


#: Layers whose weights NNCF compresses to INT8 (and whose following Add holds the bias it
#: corrects); a stage back in float gets the source's constants back.
_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def revert(quantized: ov.Model, source: ov.Model, stages: Sequence[str]) -> ov.Model:
    """A copy of ``quantized`` with ``stages`` back in float: their activation quantizers
    removed, and the layers those fed given back their FP32 weights and their biases from
    ``source`` (NNCF's bias correction tuned the biases to the INT8 error)."""
    import openvino as ov

    model = quantized.clone()
    wanted = set(stages)
    if not wanted:
        return model
    originals = {op.get_friendly_name(): op for op in source.get_ordered_ops()}

    def restore(node: Any) -> None:
        original = originals.get(node.get_friendly_name())
        if original is None or original.get_type_name() != node.get_type_name():
            return
        for index in range(min(original.get_input_size(), node.get_input_size())):
            constant = original.input_value(index).get_node()
            if constant.get_type_name() == "Constant":
                fresh = ov.op.Constant(constant.get_data().copy())
                node.input(index).replace_source_output(fresh.output(0))

    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        consumers = [t.get_node() for t in op.output(0).get_target_inputs()]
        names = sorted(node.get_friendly_name() for node in consumers)
        if (stage_of(names[0]) if names else "input") not in wanted:
            continue
        op.output(0).replace(op.input_value(0))
        for node in consumers:
            if node.get_type_name() not in _WEIGHTED:
                continue
            restore(node)
            for target in node.output(0).get_target_inputs():
                if target.get_node().get_type_name() == "Add":
                    restore(target.get_node())
    model.validate_nodes_and_infer_types()
    return model


# --- measuring -----------------------------------------------------------------------------


class _Judge:
    """Reference mattes of a set of images (FP32 at f32), and a candidate model's drift."""

    def __init__(self, reference: ov.Model, images: Sequence[F32Array], device: str) -> None:
        from toolkit.matting.runtime import core

        self.device = device
        self.images = list(images)
        compiled = core().compile_model(reference, device, {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        self.refs = [np.array(request.infer({0: x})[0], np.float32) for x in self.images]

    def drift(self, model: ov.Model) -> DriftStats:
        from toolkit.matting.runtime import core

        compiled = core().compile_model(model, self.device, {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        diffs = np.concatenate(
            [
                np.abs(np.array(request.infer({0: x})[0], np.float32) - ref).ravel()
                for x, ref in zip(self.images, self.refs, strict=True)
            ]
        )
        return DriftStats(
            float(diffs.mean()),
            float(np.quantile(diffs, 0.99)),
            float(diffs.max()),
            len(self.images),
        )


class _Busy:
    """One network compiled with the THROUGHPUT hint and its request pool, kept busy on
    demand: compiled once, measured in several windows."""

    def __init__(self, model: ov.Model | str | Path, device: str, precision: str) -> None:
        import openvino as ov

        from toolkit.matting.runtime import core

        compiled = core().compile_model(
            model, device, {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"}
        )
        self._queue = ov.AsyncInferQueue(
            compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        )
        self._done = 0

        def count(request: Any, userdata: Any) -> None:
            self._done += 1

        self._queue.set_callback(count)

    def fps(self, tensor: F32Array, seconds: float) -> float:
        for _ in range(len(self._queue)):  # fill the pool before the window opens
            self._queue.start_async({0: tensor})
        self._queue.wait_all()
        self._done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self._queue.start_async({0: tensor})
        self._queue.wait_all()
        return self._done / (time.perf_counter() - start)


def side_by_side(
    models: Sequence[tuple[ov.Model | str | Path, str]],
    tensor: F32Array,
    device: str,
    *,
    rounds: int = 3,
    seconds: float = 1.0,
) -> list[float]:
    """Median frames/s of each (model, inference precision), measured in alternating
    windows (A, B, A, B...) so that a busy moment on a shared machine hurts all alike."""
    busy = [_Busy(model, device, precision) for model, precision in models]
    samples: list[list[float]] = [[] for _ in busy]
    for _ in range(max(1, rounds)):
        for index, entry in enumerate(busy):
            samples[index].append(entry.fps(tensor, seconds))
    return [float(np.median(values)) for values in samples]


# --- the search ----------------------------------------------------------------------------


def search(
    source: ov.Model,
    quantized: ov.Model,
    budget: Budget,
    validation: Sequence[F32Array],
    holdout: Sequence[F32Array],
    *,
    device: str = "CPU",
    require_faster: bool = True,
    progress: Callable[[str], None] = lambda text: None,
) -> tuple[ov.Model, BudgetResult]:
    """The quantized model with the fewest stages back in float that fits ``budget``.

    Raises :class:`BudgetNotMet` when only the float network would fit, or (with
    ``require_faster``) when the model that fits is not faster than ``source`` at f32.
    """
    started = time.perf_counter()
    judge = _Judge(source, validation, device)
    held = _Judge(source, holdout, device)
    groups = quantizer_groups(quantized)
    steps: list[dict[str, Any]] = []

    def measured(stages: Sequence[str]) -> tuple[ov.Model, DriftStats]:
        model = revert(quantized, source, stages)
        stats = judge.drift(model)
        steps.append({"reverted": list(stages), "validation": asdict(stats)})
        return model, stats

    full, full_stats = measured([])
    progress(f"all INT8: {full_stats.describe()} on validation images")
    order: list[str] = []
    if not budget.admits(full_stats.mean, full_stats.p99, SEARCH_MARGIN):
        progress(f"measuring how much each of {len(groups)} stages adds to the drift")
        gains = {}
        for stage in groups:
            _, stats = measured([stage])
            gains[stage] = full_stats.mean - stats.mean + (full_stats.p99 - stats.p99) / 10
        order = sorted(groups, key=lambda s: gains[s], reverse=True)
    # Binary search: the fewest most-harmful stages back in float that fit (validation).
    low, high = 0, len(order)
    best: tuple[int, ov.Model, DriftStats] | None = (
        (0, full, full_stats)
        if budget.admits(full_stats.mean, full_stats.p99, SEARCH_MARGIN)
        else None
    )
    if best is None:
        while low < high:
            mid = (low + high) // 2
            model, stats = measured(order[:mid])
            progress(f"{mid} of {len(order)} stages in float: {stats.describe()}")
            if budget.admits(stats.mean, stats.p99, SEARCH_MARGIN):
                best, high = (mid, model, stats), mid
            else:
                low = mid + 1
        if best is None or best[0] != low:
            model, stats = measured(order[:low])
            best = (low, model, stats)
    count, model, stats = best
    # Held-out images: never calibrated on, never searched on.
    held_stats = held.drift(model)
    while not budget.admits(held_stats.mean, held_stats.p99) and count < len(order):
        count += 1
        model, stats = measured(order[:count])
        held_stats = held.drift(model)
        progress(f"held-out over budget: {count} stages in float: {held_stats.describe()}")
    reverted = order[:count]
    result = BudgetResult(
        None, budget, stats, held_stats, reverted, len(groups), 0.0, 0.0, 0.0, steps
    )
    if count >= len(groups) or not budget.admits(held_stats.mean, held_stats.p99):
        result.seconds = time.perf_counter() - started
        raise _not_met(result, "only the float network stays within it")
    progress("measuring the speed of the FP32 IR and the budgeted INT8 IR side by side")
    result.fp32_fps, result.int8_fps = side_by_side(
        [(source, "f32"), (model, "f32")], validation[0], device
    )
    result.seconds = time.perf_counter() - started
    if require_faster and result.int8_fps <= result.fp32_fps * MIN_SPEEDUP:
        raise _not_met(
            result,
            f"the INT8 IR within it ({len(reverted)} of {len(groups)} stages in float) runs "
            f"{result.int8_fps:.2f} frames/s, not faster than the FP32 IR's {result.fp32_fps:.2f}",
        )
    model.set_rt_info(json.dumps(_record(result)), RT_BUDGET)
    return model, result


def _record(result: BudgetResult) -> dict[str, Any]:
    from toolkit.matting.runtime import cpu_capabilities

    return {
        "max_drift_mean": result.budget.mean,
        "max_drift_p99": result.budget.p99,
        "validation": asdict(result.validation),
        "holdout": asdict(result.holdout),
        "reverted_to_float": result.reverted,
        "stages": result.groups,
        "int8_fps": result.int8_fps,
        "fp32_fps": result.fp32_fps,
        "speedup_vs_fp32_f32": result.speedup,
        "measured_on": cpu_capabilities().instruction_sets(),
    }


def _not_met(result: BudgetResult, why: str) -> BudgetNotMet:
    error = BudgetNotMet(
        f"no INT8 IR meets --max-drift ({result.budget.describe()}): {why}; nothing was "
        f"written (all INT8 drifts {result.steps[0]['validation']['mean']:.4f} mean on "
        "validation images)"
    )
    error.result = result  # type: ignore[attr-defined]
    return error


def read_budget(xml: Path) -> dict[str, Any] | None:
    """The budget record an IR was accepted under (None for an IR made without one)."""
    from toolkit.matting.runtime import core

    try:
        model = core().read_model(xml)
        if not model.has_rt_info(RT_BUDGET):
            return None
        data = json.loads(str(model.get_rt_info(RT_BUDGET).astype(str)))
        return data if isinstance(data, dict) else None
    except Exception:
        return None
