"""``modnet-tools benchmark``: every way to run MODNet here, measured side by side in one run.

What is compared, on one 512x512 frame: the IRs that ``convert`` and ``quantize`` wrote (FP32,
FP16, FP16-INT8 when present), each at OpenVINO's f32 and bf16 inference precision; the
``infer --fast`` mode exactly as infer runs it; ONNX Runtime on the same ONNX; PyTorch eager
(only when torch and the checkpoint are there). For each: latency (one synchronous request:
median and 90th percentile) and throughput (frames/s with several requests in flight: the
THROUGHPUT hint and OpenVINO's optimal number of requests; for ONNX Runtime, parallel callers).
Then end-to-end frames/s of a 720p video through the project's own ``infer`` path (decode,
resize, infer, composite, encode), against the same model's raw throughput in the same run.

Why this shape: the machine is shared and its speed drifts. Every candidate is compiled and
warmed up first; then the measurements go round-robin (candidate A, B, C..., then again) for
several rounds, so that a busy minute hurts every candidate alike instead of one; medians over
rounds are reported. Alongside wall-clock throughput the process CPU time per frame is kept:
on a loaded machine it stays close to what an idle machine would give.

Accuracy is measured in the same run: each candidate's matte on a few held-out images against
the FP32 IR at f32 (mean and max absolute difference), so a speed-up never comes without its
cost next to it. Nothing here imports torch unless the PyTorch row is measured.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from toolkit import __version__, paths
from toolkit.errors import ToolkitError
from toolkit.fsutil import atomic_path

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

#: The network's cost at 512x512 (Open Model Zoo's model card; 15.47 GMAC counted here).
GFLOP_PER_FRAME = 31.16
IR_PRECISIONS = ("FP32", "FP16", "FP16-INT8")
INFERENCE_PRECISIONS = ("f32", "bf16")
VIDEO_SIZE = (1280, 720)


class BenchmarkError(ToolkitError):
    """Nothing to benchmark, or a model the benchmark needs is missing."""


# --- results -------------------------------------------------------------------------------


@dataclass
class Row:
    """The measurements of one candidate, accumulated over the rounds."""

    key: str
    label: str
    backend: str
    model: str
    precision: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    throughput_fps: list[float] = field(default_factory=list)
    cpu_ms_per_frame: list[float] = field(default_factory=list)
    drift_mean: float | None = None
    drift_max: float | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None

    def latency_median(self) -> float | None:
        return statistics.median(self.latency_ms) if self.latency_ms else None

    def latency_p90(self) -> float | None:
        return _percentile(self.latency_ms, 90) if self.latency_ms else None

    def throughput(self) -> float | None:
        return statistics.median(self.throughput_fps) if self.throughput_fps else None

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            latency_median_ms=self.latency_median(),
            latency_p90_ms=self.latency_p90(),
            throughput_median_fps=self.throughput(),
            cpu_ms_per_frame_median=(
                statistics.median(self.cpu_ms_per_frame) if self.cpu_ms_per_frame else None
            ),
        )
        return data


@dataclass
class VideoRow:
    """End-to-end video: the ``infer`` path's frames/s vs the same model's raw throughput."""

    key: str
    label: str
    raw_key: str
    frames: int
    size: tuple[int, int]
    fps: list[float] = field(default_factory=list)
    error: str | None = None

    def median(self) -> float | None:
        return statistics.median(self.fps) if self.fps else None

    def summary(self, rows: dict[str, Row]) -> dict[str, Any]:
        raw = rows[self.raw_key].throughput() if self.raw_key in rows else None
        e2e = self.median()
        return {
            **asdict(self),
            "fps_median": e2e,
            "raw_throughput_fps": raw,
            "ratio_to_raw": (e2e / raw) if e2e and raw else None,
        }


@dataclass
class BenchmarkReport:
    rows: list[Row]
    video: list[VideoRow]
    settings: dict[str, Any]
    machine: dict[str, Any]

    def by_key(self) -> dict[str, Row]:
        return {r.key: r for r in self.rows}

    def ratios(self) -> dict[str, float | None]:
        """The figures issue 6 asks for, from this one run."""
        rows = self.by_key()

        def fps(key: str) -> float | None:
            row = rows.get(key)
            return row.throughput() if row is not None and row.ok else None

        ort = max((v for k in rows if k.startswith("ort") if (v := fps(k))), default=None)
        out: dict[str, float | None] = {
            "openvino_fp32_f32_vs_onnxruntime": _ratio(fps("ov-FP32-f32"), ort),
            "fast_vs_onnxruntime": _ratio(fps("fast"), ort),
            "fast_vs_openvino_fp32_f32": _ratio(fps("fast"), fps("ov-FP32-f32")),
        }
        for video in self.video:
            out[f"video_{video.key}_vs_raw"] = video.summary(rows)["ratio_to_raw"]
        return out

    def to_json(self) -> dict[str, Any]:
        rows = self.by_key()
        return {
            "tool": "modnet-tools benchmark",
            "version": __version__,
            "gflop_per_frame": GFLOP_PER_FRAME,
            "machine": self.machine,
            "settings": self.settings,
            "results": [r.summary() for r in self.rows],
            "video": [v.summary(rows) for v in self.video],
            "ratios": self.ratios(),
        }

    def write_json(self, dest: Path) -> None:
        """Atomically: a reader never sees a half-written report."""
        try:
            with atomic_path(dest) as tmp:
                tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        except OSError as exc:
            raise BenchmarkError(f"--json {dest}: cannot write: {exc.strerror or exc}") from None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# --- candidates ----------------------------------------------------------------------------


class Candidate(ABC):
    """One way of running the network, prepared once and measured many times."""

    def __init__(self, row: Row) -> None:
        self.row = row

    @abstractmethod
    def setup(self) -> None:
        """Load and compile (not timed)."""

    @abstractmethod
    def run(self, image: U8Image) -> F32Array:
        """One synchronous inference of a 512x512 BGR frame; the 512x512 matte."""

    @abstractmethod
    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        """Keep the candidate busy for about ``seconds``; (frames, wall s, process CPU s)."""

    def warm_up(self, image: U8Image) -> None:
        for _ in range(2):
            self.run(image)
        self.throughput(image, 0.0)

    def latency(self, image: U8Image, seconds: float, minimum: int = 3) -> list[float]:
        """Synchronous single-request latencies (ms) for about ``seconds``."""
        out: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(out) < minimum or time.perf_counter() < deadline:
            start = time.perf_counter()
            self.run(image)
            out.append(1000.0 * (time.perf_counter() - start))
        return out

    @abstractmethod
    def close(self) -> None:
        """Release compiled models and threads."""


def _bgr_tensor(image: U8Image) -> F32Array:
    """The IR's input: BGR 0..255, float32, 1x3xHxW (the normalisation is inside the IR)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def _rgb_normalised(image: U8Image) -> F32Array:
    """What ONNX and PyTorch take: RGB, (x - 127.5) / 127.5, 1x3xHxW float32."""
    rgb = image[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis])


class OpenVINOCandidate(Candidate):
    """An IR compiled twice: LATENCY hint for the synchronous runs, THROUGHPUT hint (plus any
    extra properties) with an async request pool for throughput."""

    def __init__(
        self,
        row: Row,
        xml: Path,
        *,
        precision: str,
        device: str = "CPU",
        throughput_config: dict[str, Any] | None = None,
        requests: int = 0,
        u8_input: bool = False,
    ) -> None:
        super().__init__(row)
        self.xml = xml
        self.precision = precision
        self.device = device
        self.extra = dict(throughput_config or {})
        self.requests = requests
        self.u8_input = u8_input
        self._latency: Any = None
        self._request: Any = None
        self._compiled: Any = None
        self._queue: Any = None

    def _model(self) -> Any:
        from toolkit.runtime import core

        model = core().read_model(self.xml)
        if self.u8_input:
            from toolkit.fastpath import u8_nhwc_input

            model = u8_nhwc_input(model)
        return model

    def setup(self) -> None:
        import openvino as ov

        from toolkit.runtime import core

        model = self._model()
        base = {"INFERENCE_PRECISION_HINT": self.precision}
        self._latency = core().compile_model(
            model, self.device, {**base, "PERFORMANCE_HINT": "LATENCY"}
        )
        self._request = self._latency.create_infer_request()
        tput_config = {**base, "PERFORMANCE_HINT": "THROUGHPUT", **self.extra}
        self._compiled = core().compile_model(model, self.device, tput_config)
        requests = self.requests or int(
            self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        )
        self._queue = ov.AsyncInferQueue(self._compiled, requests)
        self.row.config = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "input": "u8 NHWC" if self.u8_input else "f32 NCHW",
            "throughput": {
                "PERFORMANCE_HINT": "THROUGHPUT",
                **{k: str(v) for k, v in self.extra.items()},
                "NUM_STREAMS": str(self._compiled.get_property("NUM_STREAMS")),
                "INFERENCE_NUM_THREADS": str(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                "requests": requests,
            },
        }

    def _input(self, image: U8Image) -> npt.NDArray[Any]:
        return np.ascontiguousarray(image[np.newaxis]) if self.u8_input else _bgr_tensor(image)

    def run(self, image: U8Image) -> F32Array:
        result = self._request.infer({0: self._input(image)})
        return np.array(result[0], dtype=np.float32).reshape(image.shape[:2])

    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        x = self._input(image)
        pool = len(self._queue)
        frames = 0
        start, cpu = time.perf_counter(), time.process_time()
        deadline = start + seconds
        while frames < 2 * pool or time.perf_counter() < deadline:
            self._queue.start_async({0: x})  # blocks while every request is busy
            frames += 1
        self._queue.wait_all()
        return frames, time.perf_counter() - start, time.process_time() - cpu

    def close(self) -> None:
        if self._queue is not None:
            self._queue.wait_all()
        self._queue = self._compiled = self._request = self._latency = None


class OnnxRuntimeCandidate(Candidate):
    """ONNX Runtime's CPU provider. Latency: one session using every core. Throughput:
    ``streams`` threads calling ``run`` at once on a session with cores/streams threads each
    (ONNX Runtime's way of serving several frames; with streams=1 it is sequential)."""

    def __init__(self, row: Row, onnx: Path, *, streams: int, cores: int) -> None:
        super().__init__(row)
        self.onnx = onnx
        self.streams = max(1, streams)
        self.cores = cores
        self._latency: Any = None
        self._tput: Any = None
        self._name = ""

    def setup(self) -> None:
        import onnxruntime as ort

        def session(threads: int) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            return ort.InferenceSession(str(self.onnx), options, providers=["CPUExecutionProvider"])

        self._latency = session(self.cores)
        per_stream = max(1, self.cores // self.streams)
        self._tput = self._latency if per_stream == self.cores else session(per_stream)
        self._name = self._latency.get_inputs()[0].name
        self.row.config = {
            "latency": {"intra_op_num_threads": self.cores},
            "throughput": {"callers": self.streams, "intra_op_num_threads": per_stream},
        }

    def run(self, image: U8Image) -> F32Array:
        out = self._latency.run(None, {self._name: _rgb_normalised(image)})[0]
        return np.asarray(out, dtype=np.float32).reshape(image.shape[:2])

    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        x = _rgb_normalised(image)
        counts = [0] * self.streams
        start, cpu = time.perf_counter(), time.process_time()
        deadline = start + seconds

        def worker(i: int) -> None:
            while counts[i] < 2 or time.perf_counter() < deadline:
                self._tput.run(None, {self._name: x})
                counts[i] += 1

        _run_threads(worker, self.streams)
        return sum(counts), time.perf_counter() - start, time.process_time() - cpu

    def close(self) -> None:
        self._latency = self._tput = None


class PyTorchCandidate(Candidate):
    """PyTorch eager on the checkpoint (torch's own intra-op threads on every core)."""

    def __init__(self, row: Row, checkpoint: Path, *, cores: int) -> None:
        super().__init__(row)
        self.checkpoint = checkpoint
        self.cores = cores
        self._model: Any = None

    def setup(self) -> None:
        import torch

        from toolkit.checkpoint import load_model

        torch.set_num_threads(self.cores)
        self._model = load_model(self.checkpoint)
        self.row.config = {"torch": str(torch.__version__), "threads": self.cores}

    def run(self, image: U8Image) -> F32Array:
        import torch

        with torch.no_grad():
            out = self._model(torch.from_numpy(_rgb_normalised(image)))
        return np.asarray(out.numpy(), dtype=np.float32).reshape(image.shape[:2])

    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        frames = 0
        start, cpu = time.perf_counter(), time.process_time()
        while frames < 2 or time.perf_counter() < start + seconds:
            self.run(image)
            frames += 1
        return frames, time.perf_counter() - start, time.process_time() - cpu

    def close(self) -> None:
        self._model = None


def _run_threads(worker: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            worker(i)
        except BaseException as exc:  # handed back to the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# --- video ---------------------------------------------------------------------------------


def make_video(dest: Path, frames: int, size: tuple[int, int] = VIDEO_SIZE) -> Path:
    """A ``size`` video of the bundled photo, slowly panning and zooming (MPEG-4 in .mp4, what
    a phone or a webcam recorder would hand over), written atomically."""
    from toolkit.images import load_image
    from toolkit.video import VideoWriter

    base = load_image(paths.sample_image())
    width, height = size
    with VideoWriter(dest, fps=25.0, width=width, height=height) as writer:
        for i in range(frames):
            zoom = 1.0 + 0.15 * math.sin(i / 15.0)
            canvas = cv2.resize(
                base,
                None,
                fx=width / base.shape[1] * zoom * 1.1,
                fy=height / base.shape[0] * zoom * 1.1,
            )
            x = int((canvas.shape[1] - width) * (0.5 + 0.4 * math.sin(i / 20.0)))
            y = int((canvas.shape[0] - height) * 0.5)
            writer.write(np.ascontiguousarray(canvas[y : y + height, x : x + width]))
    return dest


class VideoCandidate:
    """The ``infer`` runner on a video file, with a session made once (compiled and warm)."""

    def __init__(self, row: VideoRow, make_session: Callable[[], Any], video: Path) -> None:
        self.row = row
        self.make_session = make_session
        self.video = video
        self.session: Any = None
        self._out: tempfile.TemporaryDirectory[str] | None = None

    def setup(self) -> None:
        self.session = self.make_session()
        self._out = tempfile.TemporaryDirectory(prefix="modnet-bench-video-")

    def measure(self, max_frames: int | None = None) -> float:
        from toolkit.images import InputItem
        from toolkit.infer import InferOptions, run_infer
        from toolkit.matting import OMZ_BACKGROUND_BGR, Background

        assert self._out is not None
        options = InferOptions(
            output_dir=Path(self._out.name),
            background=Background(color=OMZ_BACKGROUND_BGR, description="omz"),
            rgba=False,
            max_frames=max_frames,
        )
        item = InputItem(kind="video", label=str(self.video), path=self.video)
        start = time.perf_counter()
        summary = run_infer(self.session, [item], options)
        seconds = time.perf_counter() - start
        if summary.failed:
            raise BenchmarkError(f"video benchmark failed: {summary.failed[0].error}")
        return summary.frames / seconds

    def close(self) -> None:
        if self._out is not None:
            self._out.cleanup()
        self.session = None


# --- planning ------------------------------------------------------------------------------


@dataclass
class Plan:
    """What to measure; built by :func:`plan` from the files found under the model root."""

    candidates: list[Candidate]
    video: list[VideoCandidate]
    reference_key: str
    skipped: list[Row]
    #: The (H, W) every candidate runs at: the FP32 IR's static size (512x512 for OMZ's IR).
    size: tuple[int, int] = (512, 512)


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def plan(
    root: Path,
    name: str,
    *,
    ir_precisions: Sequence[str] = IR_PRECISIONS,
    inference_precisions: Sequence[str] = INFERENCE_PRECISIONS,
    onnx: Path | None = None,
    checkpoint: Path | None = None,
    pytorch: bool = True,
    onnxruntime: bool = True,
    fast: bool = True,
    explore: bool = False,
    video: Path | None = None,
    device: str = "CPU",
) -> Plan:
    """The candidates for model ``name`` under ``root`` (``convert``'s output dir); with
    ``video``, the end-to-end runs of ``infer`` on it (default path and fast mode). ``explore``
    adds the variants the fast mode was chosen against (u8 NHWC input, one stream, more
    requests), so the choice can be re-checked on another machine."""
    cores = cpu_count()
    candidates: list[Candidate] = []
    skipped: list[Row] = []
    found = {p: paths.ir_xml(root, name, p) for p in ir_precisions}
    found = {p: x for p, x in found.items() if x.is_file()}
    if "FP32" not in found:
        raise BenchmarkError(
            f"no FP32 IR at {paths.ir_xml(root, name, 'FP32')}: run `modnet-tools convert` first "
            "(the FP32 IR at f32 is the reference every other row is compared with)"
        )
    for precision, xml in found.items():
        for hint in inference_precisions:
            row = Row(
                f"ov-{precision}-{hint}",
                f"OpenVINO {precision} IR",
                "openvino",
                precision,
                hint,
                str(xml),
            )
            candidates.append(OpenVINOCandidate(row, xml, precision=hint, device=device))
    if fast:
        from toolkit.fastpath import FAST_MODE, FastModeUnavailable, fast_model

        try:
            xml = fast_model(root, name)
            row = Row(
                "fast",
                "infer --fast",
                "openvino",
                FAST_MODE.model_precision,
                FAST_MODE.inference_precision,
                str(xml),
            )
            candidates.append(
                OpenVINOCandidate(
                    row,
                    xml,
                    precision=FAST_MODE.inference_precision,
                    device=device,
                    throughput_config=FAST_MODE.throughput_config(),
                    requests=FAST_MODE.requests,
                    u8_input=FAST_MODE.u8_input,
                )
            )
            if explore:
                candidates.extend(_explore(xml, FAST_MODE.inference_precision, device))
        except FastModeUnavailable as exc:
            skipped.append(
                Row(
                    "fast",
                    "infer --fast",
                    "openvino",
                    FAST_MODE.model_precision,
                    FAST_MODE.inference_precision,
                    "",
                    skipped=str(exc),
                )
            )
    onnx_path = onnx if onnx is not None else _find_onnx(root, name)
    if onnxruntime:
        label = "ONNX Runtime"
        if importlib.util.find_spec("onnxruntime") is None:
            skipped.append(
                _skip(
                    "ort",
                    label,
                    "onnxruntime is not installed (pip install 'modnet-tools[verify]')",
                )
            )
        elif onnx_path is None or not onnx_path.is_file():
            skipped.append(
                _skip(
                    "ort", label, f"no ONNX file under {paths.model_dir(root, name)} (pass --onnx)"
                )
            )
        else:
            for streams in sorted({1, cores}):
                row = Row(
                    f"ort-{streams}x{max(1, cores // streams)}",
                    label,
                    "onnxruntime",
                    "ONNX",
                    "f32",
                    str(onnx_path),
                )
                candidates.append(
                    OnnxRuntimeCandidate(row, onnx_path, streams=streams, cores=cores)
                )
    if pytorch:
        label = "PyTorch eager"
        ckpt = checkpoint if checkpoint is not None else _find_checkpoint(root, name)
        if importlib.util.find_spec("torch") is None:
            skipped.append(
                _skip(
                    "pytorch", label, "torch is not installed (pip install 'modnet-tools[convert]')"
                )
            )
        elif ckpt is None or not ckpt.is_file():
            skipped.append(
                _skip(
                    "pytorch",
                    label,
                    f"no checkpoint under {paths.model_dir(root, name)} (pass --checkpoint)",
                )
            )
        else:
            row = Row("pytorch", label, "pytorch", "checkpoint", "f32", str(ckpt))
            candidates.append(PyTorchCandidate(row, ckpt, cores=cores))
    videos: list[VideoCandidate] = []
    if video is not None:
        videos = _video_candidates(found["FP32"], candidates, video, device)
    return Plan(candidates, videos, "ov-FP32-f32", skipped, _static_size(found["FP32"]))


def _explore(xml: Path, precision: str, device: str) -> list[Candidate]:
    """The fast mode's IR run the other ways that were considered for it."""
    variants: list[tuple[str, str, dict[str, Any], int, bool]] = [
        ("fast-u8", "u8 NHWC input", {}, 0, True),
        ("fast-1stream", "1 stream x 2 threads", {"NUM_STREAMS": 1}, 2, False),
        ("fast-4req", "2 streams, 4 requests", {}, 4, False),
    ]
    out: list[Candidate] = []
    for key, what, config, requests, u8 in variants:
        row = Row(key, f"  variant: {what}", "openvino", "FP16-INT8", precision, str(xml))
        out.append(
            OpenVINOCandidate(
                row,
                xml,
                precision=precision,
                device=device,
                throughput_config=config,
                requests=requests,
                u8_input=u8,
            )
        )
    return out


def _static_size(xml: Path) -> tuple[int, int]:
    """The IR's static (H, W); 512x512 for an IR with dynamic height and width."""
    from toolkit.runtime import core

    shape = core().read_model(xml).input(0).get_partial_shape()
    static = shape.rank.is_static and shape.rank.get_length() == 4
    if static and shape[2].is_static and shape[3].is_static:
        return shape[2].get_length(), shape[3].get_length()
    return (512, 512)


def _skip(key: str, label: str, why: str) -> Row:
    return Row(key, label, key, "-", "-", "", skipped=why)


def _find_onnx(root: Path, name: str) -> Path | None:
    folder = paths.model_dir(root, name)
    preferred = folder / f"{name.replace('-', '_')}.onnx"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    return found[0] if found else None


def _find_checkpoint(root: Path, name: str) -> Path | None:
    folder = paths.model_dir(root, name)
    preferred = folder / f"{name.replace('-', '_')}.ckpt"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    return found[0] if found else None


def _video_candidates(
    fp32: Path, candidates: list[Candidate], video: Path, device: str
) -> list[VideoCandidate]:
    """The default infer path (FP32 IR at f32) and the fast mode, on the same video."""
    from toolkit.session import MattingSession

    out = [
        VideoCandidate(
            VideoRow("infer", "infer (FP32 IR, f32)", "ov-FP32-f32", 0, VIDEO_SIZE),
            lambda: MattingSession.from_xml(
                fp32, device=device, precision="f32", performance="throughput"
            ),
            video,
        )
    ]
    fast = next((c for c in candidates if c.row.key == "fast"), None)
    if fast is not None:
        from toolkit.fastpath import fast_session

        xml = Path(fast.row.path)
        out.append(
            VideoCandidate(
                VideoRow("fast", "infer --fast", "fast", 0, VIDEO_SIZE),
                lambda: fast_session(xml, device=device),
                video,
            )
        )
    return out


# --- running -------------------------------------------------------------------------------


class Progress(Protocol):
    """What the benchmark tells its caller while it runs (the CLI prints; tests ignore)."""

    def message(self, text: str) -> None: ...


class SilentProgress:
    def message(self, text: str) -> None:
        pass


def machine_info() -> dict[str, Any]:
    """CPU model, cores, clock, ISA extensions that decide the peak, load and versions."""
    info: dict[str, Any] = {
        "cores": cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        info["cpu"] = fields.get("model name", "")
        info["vendor"] = fields.get("vendor_id", "")
        info["family"] = fields.get("cpu family", "")
        info["model"] = fields.get("model", "")
        with contextlib.suppress(ValueError):
            info["mhz"] = float(fields.get("cpu MHz", "nan"))
        flags = set(fields.get("flags", "").split())
        info["isa"] = sorted(
            f
            for f in (
                "avx2",
                "fma",
                "avx512f",
                "avx512_bf16",
                "avx512_vnni",
                "amx_bf16",
                "amx_int8",
            )
            if f in flags
        )
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg"] = list(os.getloadavg())
    with contextlib.suppress(ImportError):
        import openvino as ov

        info["openvino"] = ov.get_version()
    for module in ("onnxruntime", "torch", "nncf"):
        if importlib.util.find_spec(module) is not None:
            with contextlib.suppress(Exception):
                info[module] = str(__import__(module).__version__)
    return info


def peak_estimate(machine: dict[str, Any]) -> dict[str, Any]:
    """The CPU's arithmetic peak and the frames/s it would allow at 31.16 GFLOP a frame.

    FLOP per cycle per core are assumptions from the micro-architecture, stated in the output:
    AMD Zen 4 (family 25 with AVX-512) runs AVX-512 on two 256-bit FMA pipes: 2 x 8 lanes x 2
    = 32 FP32 FLOP/cycle; VDPBF16PS doubles the products per lane (64 bf16 FLOP/cycle);
    VPDPBUSD does 4 u8 x s8 products per 32-bit lane (128 INT8 OP/cycle). Intel cores with
    two 512-bit FMA units have twice that. The clock is /proc/cpuinfo's (a VM reports the
    nominal clock; turbo may be higher).
    """
    isa = set(machine.get("isa", []))
    amd_zen4 = machine.get("vendor") == "AuthenticAMD" and "avx512f" in isa
    if "avx512f" in isa:
        fp32 = 32 if amd_zen4 else 64
        width = "2 x 256-bit FMA pipes (AVX-512 split in halves)" if amd_zen4 else "2 x 512-bit FMA"
    elif "avx2" in isa:
        fp32, width = 32, "2 x 256-bit FMA"
    else:
        fp32, width = 8, "SSE"
    per_cycle = {"fp32": fp32}
    if "avx512_bf16" in isa or "amx_bf16" in isa:
        per_cycle["bf16"] = 2 * fp32
    if "avx512_vnni" in isa or "amx_int8" in isa:
        per_cycle["int8"] = 4 * fp32
    ghz = float(machine.get("mhz") or 0.0) / 1000.0
    cores = int(machine.get("cores", 1))
    out: dict[str, Any] = {
        "ghz": ghz,
        "cores": cores,
        "pipes": width,
        "per_cycle_per_core": per_cycle,
    }
    for kind, flop in per_cycle.items():
        gflops = cores * ghz * flop
        out[kind] = {"gflop_s": gflops, "max_fps": gflops / GFLOP_PER_FRAME if gflops else None}
    return out


def run_benchmark(
    bench: Plan,
    *,
    rounds: int = 5,
    seconds: float = 2.0,
    drift_images: int = 8,
    progress: Progress | None = None,
    settings: dict[str, Any] | None = None,
) -> BenchmarkReport:
    """Set every candidate up, measure the drift, then measure round-robin for ``rounds``."""
    from toolkit.calibration import holdout_set

    progress = progress or SilentProgress()
    machine = machine_info()
    image = _fit(holdout_set(1)[0], bench.size)
    ready: list[Candidate] = []
    for cand in bench.candidates:
        progress.message(f"preparing {cand.row.label} ({cand.row.precision})")
        try:
            cand.setup()
            cand.warm_up(image)
            ready.append(cand)
        except ToolkitError:
            raise
        except Exception as exc:
            cand.row.error = _first_line(exc)
    _measure_drift(ready, bench.reference_key, drift_images, bench.size, progress)
    for video in bench.video:
        progress.message(f"preparing video: {video.row.label}")
        try:
            video.setup()
            video.measure(max_frames=8)  # warm-up: compiles, opens the codecs, fills caches
        except ToolkitError as exc:
            video.row.error = str(exc)
    try:
        for r in range(rounds):
            progress.message(f"round {r + 1} of {rounds}")
            for cand in ready:
                if not cand.row.ok:
                    continue
                try:
                    cand.row.latency_ms.extend(cand.latency(image, seconds / 2))
                    frames, wall, cpu = cand.throughput(image, seconds)
                    cand.row.throughput_fps.append(frames / wall)
                    cand.row.cpu_ms_per_frame.append(1000.0 * cpu / frames)
                except Exception as exc:
                    cand.row.error = _first_line(exc)
            for video in bench.video:
                if video.row.error is None:
                    try:
                        video.row.fps.append(video.measure())
                    except ToolkitError as exc:
                        video.row.error = str(exc)
    finally:
        for cand in bench.candidates:
            cand.close()
        for video in bench.video:
            video.close()
    machine["loadavg_after"] = machine_info().get("loadavg")
    machine["peak"] = peak_estimate(machine)
    for video in bench.video:
        video.row.frames = _video_frames(video.video)
    return BenchmarkReport(
        [c.row for c in bench.candidates] + bench.skipped,
        [v.row for v in bench.video],
        {"rounds": rounds, "seconds": seconds, "drift_images": drift_images, **(settings or {})},
        machine,
    )


def _fit(image: U8Image, size: tuple[int, int]) -> U8Image:
    """Resize to the network's (H, W) as infer's stretch mode does (bilinear)."""
    if image.shape[:2] == size:
        return image
    return np.asarray(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


def _measure_drift(
    ready: list[Candidate],
    reference_key: str,
    count: int,
    size: tuple[int, int],
    progress: Progress,
) -> None:
    """Each candidate's matte against the reference's on held-out images (not calibration)."""
    from toolkit.calibration import holdout_set

    reference = next((c for c in ready if c.row.key == reference_key), None)
    if reference is None or count < 1:
        return
    progress.message(f"accuracy: {count} held-out images against {reference.row.label}")
    images = [_fit(image, size) for image in holdout_set(count)]
    refs = [reference.run(img) for img in images]
    for cand in ready:
        try:
            diffs = np.concatenate(
                [np.abs(cand.run(img) - ref).ravel() for img, ref in zip(images, refs, strict=True)]
            )
        except Exception as exc:
            cand.row.error = _first_line(exc)
            continue
        cand.row.drift_mean, cand.row.drift_max = float(diffs.mean()), float(diffs.max())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def video_file(frames: int, given: Path | None) -> Iterator[Path | None]:
    """The video to run: the user's, or a generated 720p one in a temporary folder."""
    if given is not None:
        if not given.is_file():
            raise BenchmarkError(f"--video {given}: no such file")
        yield given
        return
    if frames <= 0:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="modnet-bench-") as tmp:
        yield make_video(Path(tmp) / "portrait_720p.mp4", frames)


# --- rendering -----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(report: BenchmarkReport) -> Any:
    """The rich table of every row: speed, its ratio to ONNX Runtime, and the accuracy cost."""
    from rich.table import Table

    ort = _best_ort(report)
    table = Table(title="MODNet 512x512, one run, candidates measured round-robin")
    for header, justify in (
        ("backend", "left"),
        ("model", "left"),
        ("precision", "left"),
        ("latency median (ms)", "right"),
        ("latency p90 (ms)", "right"),
        ("throughput (frames/s)", "right"),
        ("x ONNX Runtime", "right"),
        ("CPU ms/frame", "right"),
        ("matte vs FP32 f32: mean", "right"),
        ("max", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        if not row.ok:
            why = row.skipped or f"error: {row.error}"
            table.add_row(row.label, row.model, row.precision, why, *[""] * 6)
            continue
        fps = row.throughput()
        cpu = statistics.median(row.cpu_ms_per_frame) if row.cpu_ms_per_frame else None
        table.add_row(
            row.label + (f" ({row.key})" if row.backend == "onnxruntime" else ""),
            row.model,
            row.precision,
            _fmt(row.latency_median(), ".1f"),
            _fmt(row.latency_p90(), ".1f"),
            _fmt(fps, ".2f"),
            _fmt(_ratio(fps, ort), ".2f"),
            _fmt(cpu, ".0f"),
            _fmt(row.drift_mean, ".4f"),
            _fmt(row.drift_max, ".3f"),
        )
    return table


def video_table(report: BenchmarkReport) -> Any:
    from rich.table import Table

    rows = report.by_key()
    table = Table(title="720p video end to end (decode, resize, infer, composite, encode)")
    for header in ("path", "frames", "end to end (frames/s)", "raw IR (frames/s)", "ratio"):
        table.add_column(header, justify="left" if header == "path" else "right")
    for video in report.video:
        data = video.summary(rows)
        if video.error:
            table.add_row(video.label, "", f"error: {video.error}", "", "")
            continue
        table.add_row(
            video.label,
            str(video.frames),
            _fmt(data["fps_median"], ".2f"),
            _fmt(data["raw_throughput_fps"], ".2f"),
            _fmt(data["ratio_to_raw"], ".2f"),
        )
    return table


def _best_ort(report: BenchmarkReport) -> float | None:
    values = [
        fps for r in report.rows if r.backend == "onnxruntime" and r.ok if (fps := r.throughput())
    ]
    return max(values) if values else None


def summary_lines(report: BenchmarkReport) -> list[str]:
    """The ratios issue 6 asks for, the machine's load and its arithmetic limit, as text."""
    ratios = report.ratios()
    rows = report.by_key()
    lines = []
    labels = {
        "openvino_fp32_f32_vs_onnxruntime": "OpenVINO FP32 IR at f32 / ONNX Runtime throughput",
        "fast_vs_onnxruntime": "infer --fast / ONNX Runtime throughput",
        "fast_vs_openvino_fp32_f32": "infer --fast / OpenVINO FP32 IR at f32 throughput",
    }
    for key, text in labels.items():
        if ratios.get(key) is not None:
            lines.append(f"{text}: {ratios[key]:.2f}x")
    fast = rows.get("fast")
    if fast is not None and fast.ok and fast.drift_mean is not None:
        lines.append(
            f"infer --fast matte vs FP32 IR at f32: mean |diff| {fast.drift_mean:.4f}, "
            f"max {_fmt(fast.drift_max, '.3f')}"
        )
    for video in report.video:
        ratio = ratios.get(f"video_{video.key}_vs_raw")
        if ratio is not None:
            lines.append(f"720p video, {video.label}: {ratio:.2f}x the IR's raw throughput")
    machine = report.machine
    load = machine.get("loadavg")
    after = machine.get("loadavg_after")
    if load:
        lines.append(
            f"load average before {load[0]:.2f}"
            + (f", after {after[0]:.2f}" if after else "")
            + f" on {machine.get('cores')} cores"
        )
    peak = machine.get("peak") or peak_estimate(machine)
    for kind in ("fp32", "bf16", "int8"):
        if kind in peak and peak[kind]["max_fps"]:
            lines.append(
                f"peak {kind}: {peak['cores']} cores x {peak['ghz']:.2f} GHz x "
                f"{peak['per_cycle_per_core'][kind]} per cycle = {peak[kind]['gflop_s']:.0f} "
                f"G{'OP' if kind == 'int8' else 'FLOP'}/s -> at most "
                f"{peak[kind]['max_fps']:.1f} frames/s at {GFLOP_PER_FRAME} GFLOP a frame"
            )
    return lines
