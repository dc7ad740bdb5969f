"""``infer --fast``: the fastest configuration measured on this kind of machine, in one place.

Chosen by measurement with ``modnet-tools benchmark --explore`` (README, "Performance") on a
2-core AVX-512 (Zen 4) CPU, all candidates in one run, a tame random-weight checkpoint:

* INT8 (the FP16-INT8 IR that ``quantize`` writes) with bf16 for the layers left in float:
  the winner, about 3x the FP32 IR at f32 and 3.6x ONNX Runtime. INT8 at f32 is ~17% slower
  (the float layers dominate what is left); the FP32 IR at bf16 gives 2x.
* u8 NHWC input (the OpenCV frame handed over as is, :func:`u8_nhwc_input`): no measurable
  gain (the conversion the host saves is under 1% of a frame), so the IR's float contract stays.
* Streams and requests: OpenVINO's THROUGHPUT hint (2 streams x 1 thread, 2 requests) beats
  1 stream x 2 threads by ~40%; 4 requests in flight change nothing.

Its accuracy cost is measured against the FP32 IR at f32 and stated in :data:`ACCURACY_NOTE`
(shown in ``infer --help``). ``infer`` calls :func:`fast_choice` to pick the IR and precision;
the benchmark opens exactly that with :func:`fast_session`. Nothing here imports torch or NNCF,
and importing this module does not import OpenVINO (infer's CLI imports it at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import paths
from toolkit.errors import ToolkitError, UsageError

if TYPE_CHECKING:
    import openvino as ov

    from toolkit.matting.prepost import ResizeMode
    from toolkit.matting.runtime import InferencePrecision, PerformanceMode
    from toolkit.matting.session import MattingSession


class FastModeUnavailable(ToolkitError):
    """The IR the fast mode runs has not been made yet."""


@dataclass(frozen=True)
class FastMode:
    """What ``--fast`` runs: which IR, at which inference precision, with which properties."""

    model_precision: str
    inference_precision: InferencePrecision
    performance: PerformanceMode
    requests: int = 0
    u8_input: bool = False
    streams: int | None = None
    threads: int | None = None

    def throughput_config(self) -> dict[str, Any]:
        """Extra compile properties on top of the precision and performance hints."""
        config: dict[str, Any] = {}
        if self.streams is not None:
            config["NUM_STREAMS"] = self.streams
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def describe(self) -> str:
        return (
            f"{self.model_precision} IR at {self.inference_precision}, "
            f"{self.performance} hint" + (f", {self.requests} requests" if self.requests else "")
        )


#: The measured winner (see the module docstring).
FAST_MODE = FastMode(
    model_precision="FP16-INT8",
    inference_precision="bf16",
    performance="throughput",
)

#: Matte difference from the FP32 IR at f32, measured with ``modnet-tools quantize`` defaults on
#: a random-weight ("tame") checkpoint over held-out images. Trained weights will differ.
ACCURACY_NOTE = (
    "matte difference from the FP32 IR at f32, measured on held-out images with a "
    "random-weight test checkpoint: mean 0.012, max 0.39 (p99 0.07)"
)

#: ``infer --fast``'s help text: what it runs, what it buys, what it costs.
FAST_HELP = (
    f"Fastest measured mode: the {FAST_MODE.model_precision} IR made by `modnet-tools "
    f"quantize` (run it first), at {FAST_MODE.inference_precision} inference precision; about "
    "3.5x ONNX Runtime's throughput on a 2-core AVX-512 CPU. Accuracy cost: " + ACCURACY_NOTE + "."
)


def fast_model(root: Path, name: str) -> Path:
    """The IR ``--fast`` runs: ``<root>/public/<name>/FP16-INT8/<name>.xml``, or one line
    saying how to make it."""
    xml = paths.ir_xml(root, name, FAST_MODE.model_precision)
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise FastModeUnavailable(
            f"--fast needs the INT8 IR at {xml}: run `modnet-tools quantize"
            + (f" -o {root}" if root != paths.default_root() else "")
            + "` first"
        )
    return xml


def fast_choice(
    model: Path | None,
    name: str,
    precision: str | None,
    inference_precision: str,
    root: Path | None,
) -> tuple[Path, InferencePrecision]:
    """What ``infer --fast`` runs, given infer's other options: (IR, inference precision).

    ``--model`` still wins (that IR, run the fast way); ``--precision`` and a non-default
    ``--inference-precision`` contradict ``--fast`` and are refused rather than ignored.
    """
    if precision is not None:
        raise UsageError(
            f"--fast runs the {FAST_MODE.model_precision} IR; drop --precision (or pass --model)"
        )
    if inference_precision.lower() != "f32":
        raise UsageError("--fast sets the inference precision itself; drop --inference-precision")
    xml = model if model is not None else fast_model(root or paths.default_root(), name)
    return xml, FAST_MODE.inference_precision


def fast_session(
    xml: Path, *, device: str = "CPU", resize: ResizeMode = "stretch", requests: int = 0
) -> MattingSession:
    """A session on ``xml`` with the fast mode's precision, hint and requests."""
    from toolkit.matting.session import MattingSession

    return MattingSession.from_xml(
        xml,
        device=device,
        precision=FAST_MODE.inference_precision,
        resize=resize,
        performance=FAST_MODE.performance,
        requests=requests or FAST_MODE.requests,
    )


def u8_nhwc_input(model: ov.Model) -> ov.Model:
    """The same network taking the OpenCV frame as is: uint8, N x H x W x 3 (BGR).

    The conversion to float and the transpose to NCHW move into the compiled graph, where
    OpenVINO fuses them with the first layers' reorders; the host hands over the frame without
    touching it. The IR's own normalisation (mean, scale, channel reversal) is untouched.
    """
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    info = ppp.input(0)
    info.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    info.model().set_layout(ov.Layout("NCHW"))
    return ppp.build()
