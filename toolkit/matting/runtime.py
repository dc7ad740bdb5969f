"""OpenVINO model loading, compilation per input size, and synchronous/asynchronous inference.

One :class:`IRModel` reads the IR once and compiles it lazily for each input size it is asked
for (a fixed 512x512 IR is reshaped for keep-aspect sizes: the network accepts any multiple of
32). The inference precision is explicit because the CPU plugin silently runs in bf16 on CPUs
that have it, which moves the matte; ``f32`` is the default so results match PyTorch.

:meth:`IRModel.run_ordered` keeps several asynchronous requests in flight and yields results
in submission order, so the caller's decoding and encoding overlap with inference.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import openvino as ov

from toolkit.errors import ToolkitError, UsageError, one_line
from toolkit.matting.prepost import check_network_size

InferencePrecision = Literal["f32", "bf16", "f16"]
INFERENCE_PRECISIONS: tuple[InferencePrecision, ...] = ("f32", "bf16", "f16")
PerformanceMode = Literal["latency", "throughput"]

#: How many compiled sizes stay alive; a folder of mixed sizes under keep-aspect would
#: otherwise keep one compiled network (tens of MB) per distinct size.
COMPILED_CACHE_SIZE = 4

F32Array = npt.NDArray[np.float32]
K = TypeVar("K")


class ModelError(ToolkitError):
    """The IR cannot be read, is not a MODNet-like matting IR, or cannot be compiled."""


def _dim(shape: ov.PartialShape, index: int) -> str:
    return str(shape[index]) if shape.rank.is_static and index < len(shape) else "?"


def matting_signature_problem(model: ov.Model) -> str | None:
    """What makes ``model`` not a matting network (None when it is one).

    A matting IR has one input N x 3 x H x W (a colour image, float) and one output
    N x 1 x H x W (the matte) of the same batch and, where both are static, the same H and W.
    A classifier (N x 1000), a segmenter with C classes, or an IR with extra inputs would
    otherwise run and produce a "matte" that means nothing.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return (
            f"expected one image input and one matte output, found {len(model.inputs)} "
            f"input(s) and {len(model.outputs)} output(s)"
        )
    shape_in = model.input(0).get_partial_shape()
    shape_out = model.output(0).get_partial_shape()
    if shape_in.rank.is_dynamic or shape_in.rank.get_length() != 4 or _dim(shape_in, 1) != "3":
        return f"expected an N x 3 x H x W image input, found {shape_in}"
    if not model.input(0).get_element_type().is_real():
        return f"expected a floating-point image input, found {model.input(0).get_element_type()}"
    if shape_out.rank.is_dynamic or shape_out.rank.get_length() != 4 or _dim(shape_out, 1) != "1":
        return f"expected an N x 1 x H x W matte output, found {shape_out}"
    for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
        a, b = shape_in[axis], shape_out[axis]
        if a.is_static and b.is_static and a.get_length() != b.get_length():
            return (
                f"the matte's {label} {b} differs from the input's {a} ({shape_out} vs {shape_in})"
            )
    return None


_core_lock = threading.Lock()
_core: ov.Core | None = None


def core() -> ov.Core:
    """The process's one OpenVINO Core (creating one is slow and they share plugins anyway)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


# --- what the CPU can do ---------------------------------------------------------------------

#: Replaces what OpenVINO and /proc/cpuinfo report, for tests and for "what would an AVX2-only
#: CPU do": a comma-separated list of the features below (``avx2`` alone is an AVX2-only CPU).
CAPS_ENV = "MODNET_TOOLS_CPU_CAPS"
#: The features that decide speed here, in the order they are printed; the names are the
#: override's vocabulary and the right-hand side how they are shown.
CPU_FEATURES: dict[str, str] = {
    "avx2": "AVX2",
    "avx512": "AVX-512",
    "vnni": "VNNI",
    "bf16": "bf16",
    "amx": "AMX",
    "fp16": "fp16",
}
#: /proc/cpuinfo flags that mean each feature.
_CPUINFO_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "amx": ("amx_tile",),
    "fp16": ("avx512_fp16",),
}
#: Which OpenVINO capability an inference precision needs on the CPU (f32 needs none).
_PRECISION_CAPABILITY: dict[str, str] = {"bf16": "BF16", "f16": "FP16"}


@dataclass(frozen=True)
class CpuCapabilities:
    """What this CPU runs natively: OpenVINO's ``OPTIMIZATION_CAPABILITIES`` (``BF16``,
    ``INT8``, ``FP16``...), which decide the inference precisions, and the instruction sets
    from /proc/cpuinfo (AVX2, AVX-512, VNNI, bf16, AMX), which decide vector width and speed.

    OpenVINO does not fail when asked for bf16 on a CPU without it: it silently runs f32. So
    the toolkit asks this object first and says so instead (:func:`effective_precision`).
    """

    openvino: frozenset[str]
    features: frozenset[str]
    source: str = "OpenVINO"

    @property
    def bf16(self) -> bool:
        return "BF16" in self.openvino

    @property
    def int8(self) -> bool:
        return "INT8" in self.openvino

    def runs(self, precision: str) -> bool:
        """Whether OpenVINO runs this inference precision natively here."""
        need = _PRECISION_CAPABILITY.get(precision)
        return need is None or need in self.openvino

    def instruction_sets(self) -> list[str]:
        """The features found, as printed: ``["AVX2", "AVX-512", "VNNI", "bf16", "AMX"]``."""
        return [shown for name, shown in CPU_FEATURES.items() if name in self.features]

    def fp32_lanes(self) -> int:
        """FP32 lanes of the widest vector this CPU has (16 with AVX-512, 8 with AVX2)."""
        if "avx512" in self.features:
            return 16
        return 8 if "avx2" in self.features else 4

    def describe(self) -> str:
        sets = ", ".join(self.instruction_sets()) or "none of AVX2, AVX-512, VNNI, bf16, AMX"
        caps = ", ".join(sorted(self.openvino))
        return f"instruction sets: {sets}; OpenVINO capabilities: {caps} (from {self.source})"


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _from_override(value: str) -> CpuCapabilities:
    names = {v.strip().lower() for v in value.split(",") if v.strip()}
    unknown = sorted(names - set(CPU_FEATURES))
    if unknown:
        raise UsageError(
            f"{CAPS_ENV}={value!r}: unknown feature {unknown[0]!r} "
            f"(use a comma-separated list of {', '.join(CPU_FEATURES)})"
        )
    openvino = {"FP32", "INT8"}
    openvino |= {cap for name, cap in (("bf16", "BF16"), ("fp16", "FP16")) if name in names}
    return CpuCapabilities(frozenset(openvino), frozenset(names), f"{CAPS_ENV}={value}")


def cpu_capabilities(device: str = "CPU") -> CpuCapabilities:
    """What the CPU can do: the one place the product and the tests read it from.

    OpenVINO's ``OPTIMIZATION_CAPABILITIES`` and /proc/cpuinfo's flags, unless
    ``$MODNET_TOOLS_CPU_CAPS`` replaces both (tests use it to run the AVX2-only branch on any
    CPU; nothing else sets it).
    """
    override = os.environ.get(CAPS_ENV)
    if override is not None and override.strip():
        return _from_override(override)
    try:
        openvino = {str(c) for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except Exception:
        openvino = {"FP32"}
    flags = _cpuinfo_flags()
    features = {name for name, wanted in _CPUINFO_FLAGS.items() if flags & set(wanted)}
    return CpuCapabilities(frozenset(openvino), frozenset(features))


def effective_precision(
    requested: InferencePrecision, device: str = "CPU"
) -> tuple[InferencePrecision, str | None]:
    """The precision that really runs, and one line saying so when it is not the one asked.

    On a CPU device without the capability (bf16 without ``BF16``, f16 without ``FP16``)
    OpenVINO would silently run f32; the toolkit runs f32 explicitly and says it.
    """
    if requested == "f32" or not device.upper().startswith("CPU"):
        return requested, None
    caps = cpu_capabilities(device)
    if caps.runs(requested):
        return requested, None
    have = ", ".join(caps.instruction_sets()) or "no AVX2"
    return "f32", (
        f"this CPU has no {requested} ({have}; OpenVINO: {', '.join(sorted(caps.openvino))}): "
        f"running f32 instead"
    )


def parse_precision(value: str) -> InferencePrecision:
    """Validate ``--inference-precision``."""
    for p in INFERENCE_PRECISIONS:
        if value.lower() == p:
            return p
    raise UsageError(
        f"--inference-precision must be one of {', '.join(INFERENCE_PRECISIONS)}, not {value!r}"
    )


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 300)  # the reason, not OpenVINO's source location


def _not_an_ir(path: Path) -> str | None:
    """What ``path`` is when it is plainly not an IR's .xml, said in the user's terms.

    ``--model x.onnx`` used to fail with "x.bin is missing", which sent users looking for a
    file that should not exist. OpenVINO could read the ONNX, but it lacks what ``convert``
    builds into the IR (the input normalisation and the BGR->RGB reversal), so its mattes
    would be wrong: it is named and refused instead.
    """
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return None  # XML: OpenVINO says what is wrong with it, if anything
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return (
            "an ONNX model, not an OpenVINO IR; infer runs the IR `modnet-tools convert` makes "
            "(it has the input normalisation built in, the ONNX does not): pass that .xml"
        )
    if head.startswith((b"PK\x03\x04", b"\x80\x02", b"\x80\x04")) or path.suffix.lower() in (
        ".ckpt",
        ".pth",
        ".pt",
    ):
        return (
            "a PyTorch checkpoint, not an OpenVINO IR: make the IR with "
            f"`modnet-tools convert --checkpoint {path}` and pass its .xml"
        )
    return "not an OpenVINO IR (expected the .xml file that `modnet-tools convert` writes)"


@dataclass
class _Compiled:
    """A network compiled for one input size, with its request pool created on first use."""

    model: ov.CompiledModel
    requests: int
    _queue: ov.AsyncInferQueue | None = None
    _sync: ov.InferRequest | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def queue(self) -> ov.AsyncInferQueue:
        if self._queue is None:
            self._queue = ov.AsyncInferQueue(self.model, self.requests)
        return self._queue

    def sync_request(self) -> ov.InferRequest:
        if self._sync is None:
            self._sync = self.model.create_infer_request()
        return self._sync


class IRModel:
    """An OpenVINO IR with one image input (N x 3 x H x W) and one matte output (N x 1 x H x W).

    ``performance`` picks OpenVINO's hint: ``latency`` for one image at a time (all cores on
    one request), ``throughput`` for folders and video (parallel streams). ``requests`` is the
    size of the asynchronous pool (0: OpenVINO's optimal number for the device and hint).
    """

    def __init__(
        self,
        xml: str | Path,
        *,
        device: str = "CPU",
        precision: InferencePrecision = "f32",
        performance: PerformanceMode = "latency",
        requests: int = 0,
    ) -> None:
        self.xml = Path(xml)
        self.device = device
        #: What was asked, what runs (f32 where the CPU lacks bf16/f16), and the line saying so.
        self.requested_precision: InferencePrecision = precision
        self.precision, self.precision_note = effective_precision(precision, device)
        self.performance = performance
        self.requests = max(0, requests)
        self._model = self._read(self.xml)
        self.input_name = self._model.input(0).get_any_name()
        self.fixed_size = self._static_size(self._model)
        self._compiled: OrderedDict[tuple[int, int], _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        self._check_device()

    # --- loading ---------------------------------------------------------------------------

    @staticmethod
    def _read(xml: Path) -> ov.Model:
        if not xml.is_file():
            raise ModelError(f"{xml}: no such IR file")
        not_ir = _not_an_ir(xml)
        if not_ir is not None:
            raise ModelError(f"{xml}: {not_ir}")
        if not xml.with_suffix(".bin").is_file():
            raise ModelError(f"{xml}: its weights file {xml.with_suffix('.bin').name} is missing")
        try:
            model = core().read_model(xml)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            raise ModelError(f"{xml}: cannot read the IR: {_first_line(exc)}") from None
        problem = matting_signature_problem(model)
        if problem is not None:
            raise ModelError(f"{xml}: not a matting IR: {problem}")
        return model

    def rt_value(self, *path: str) -> str | None:
        """A value of the IR's rt_info (``rt_value("modnet_tools", "weights")``), or None."""
        if not self._model.has_rt_info(list(path)):
            return None
        return str(self._model.get_rt_info(list(path)).astype(str))

    @staticmethod
    def _static_size(model: ov.Model) -> tuple[int, int] | None:
        shape = model.input(0).get_partial_shape()
        if shape[2].is_static and shape[3].is_static:
            return shape[2].get_length(), shape[3].get_length()
        return None

    def _check_device(self) -> None:
        available = core().available_devices
        base = self.device.split(":", 1)[0].split(".", 1)[0]
        if base in ("AUTO", "MULTI", "HETERO", "BATCH"):
            return
        if self.device not in available and base not in available:
            raise ModelError(
                f"device {self.device!r} is not available here (available: {', '.join(available)})"
            )

    def config(self) -> dict[str, Any]:
        """The compile-time properties: explicit inference precision and performance hint."""
        return {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": self.performance.upper(),
        }

    # --- compilation -----------------------------------------------------------------------

    def _compiled_for(self, size: tuple[int, int]) -> _Compiled:
        with self._lock:
            entry = self._compiled.get(size)
            if entry is not None:
                self._compiled.move_to_end(size)
                return entry
            height, width = size
            if height % 32 or width % 32:
                raise ModelError(f"input size {width}x{height} is not a multiple of 32")
            check_network_size(height, width)
            try:
                if self._static_size(self._model) != size:
                    self._model.reshape({self.input_name: ov.PartialShape([1, 3, height, width])})
                compiled = core().compile_model(self._model, self.device, self.config())
            except ToolkitError:
                raise
            except Exception as exc:
                raise ModelError(
                    f"cannot compile {self.xml.name} for {width}x{height} on {self.device}: "
                    f"{_first_line(exc)}"
                ) from None
            entry = _Compiled(compiled, self.requests)
            self._compiled[size] = entry
            while len(self._compiled) > COMPILED_CACHE_SIZE:
                _, old = self._compiled.popitem(last=False)
                if old._queue is not None:
                    old._queue.wait_all()
            return entry

    def compiled(self, size: tuple[int, int]) -> ov.CompiledModel:
        """The compiled network for input size (H, W), compiling on first use."""
        return self._compiled_for(size).model

    def optimal_requests(self, size: tuple[int, int]) -> int:
        """How many requests the async pool for ``size`` holds."""
        return len(self._compiled_for(size).queue())

    # --- inference -------------------------------------------------------------------------

    def infer(self, tensor: F32Array) -> F32Array:
        """Run one 1 x 3 x H x W tensor synchronously; return the 1 x 1 x H x W matte (a copy)."""
        size = (int(tensor.shape[2]), int(tensor.shape[3]))
        entry = self._compiled_for(size)
        with entry.lock:
            request = entry.sync_request()
            request.infer({0: tensor})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def run_ordered(self, items: Iterable[tuple[K, F32Array]]) -> Iterator[tuple[K, F32Array]]:
        """Infer a stream of (key, tensor) asynchronously; yield (key, matte) in input order.

        Up to the pool size of requests run at once (per input size). Results that finish out
        of order wait until the ones before them are yielded, so callers can write video
        frames straight away. The input iterable is consumed lazily: the caller's decoding of
        the next frame overlaps with inference of the previous ones. One stream at a time per
        model (the request pools' callbacks belong to the running stream).
        """
        done: dict[int, F32Array | BaseException] = {}
        cond = threading.Condition()

        def on_done(request: ov.InferRequest, seq: int) -> None:
            try:
                result: F32Array | BaseException = np.array(
                    request.get_output_tensor(0).data, dtype=np.float32
                )
            except BaseException as exc:  # handed to the consumer, never lost in a C++ thread
                result = exc
            with cond:
                done[seq] = result
                cond.notify_all()

        keys: dict[int, K] = {}
        queues: list[ov.AsyncInferQueue] = []
        next_out = 0

        def ready() -> Iterator[tuple[K, F32Array]]:
            nonlocal next_out
            while True:
                with cond:
                    if next_out not in done:
                        return
                    result = done.pop(next_out)
                key = keys.pop(next_out)
                next_out += 1
                if isinstance(result, BaseException):
                    raise ModelError(f"inference failed: {_first_line(result)}")
                yield key, result

        submitted = 0
        try:
            for key, tensor in items:
                entry = self._compiled_for((int(tensor.shape[2]), int(tensor.shape[3])))
                queue = entry.queue()
                if queue not in queues:
                    queue.set_callback(on_done)
                    queues.append(queue)
                keys[submitted] = key
                queue.start_async({0: tensor}, submitted)  # blocks while every request is busy
                submitted += 1
                yield from ready()
            while next_out < submitted:
                with cond:
                    cond.wait_for(lambda: next_out in done)
                yield from ready()
        finally:
            for queue in queues:
                queue.wait_all()
