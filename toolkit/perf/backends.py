"""The things the benchmark measures: one class per runtime (OpenVINO, ONNX Runtime, PyTorch)
with the same small interface, and the ``infer`` video path.

Each candidate is set up once (loaded, compiled, warmed up) and then asked repeatedly for a
synchronous run (latency) and a busy window (throughput); ONNX Runtime and torch are imported
only when their candidate is set up.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from toolkit import paths
from toolkit.perf.report import VIDEO_SIZE, BenchmarkError, Row, VideoRow

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]


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
        """Keep the candidate busy for about ``seconds``; (frames, wall s, process CPU s) of
        its steady state (see :class:`_Window`)."""

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
        network_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(row)
        self.xml = xml
        #: (H, W) the IR is reshaped to (``--network-size``); frames are stretched to it and
        #: the matte is resized back, so drift is measured against the full-size matte.
        self.network_size = network_size
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
        from toolkit.matting.runtime import core

        model = core().read_model(self.xml)
        if self.network_size is not None:
            import openvino as ov

            height, width = self.network_size
            model.reshape({model.input(0).get_any_name(): ov.PartialShape([1, 3, height, width])})
        if self.u8_input:
            from toolkit.perf.fastpath import u8_nhwc_input

            model = u8_nhwc_input(model)
        return model

    def setup(self) -> None:
        import openvino as ov

        from toolkit.matting.runtime import core

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
            **self.row.config,
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
        if self.network_size is not None and image.shape[:2] != self.network_size:
            height, width = self.network_size
            image = np.asarray(
                cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8
            )
        return np.ascontiguousarray(image[np.newaxis]) if self.u8_input else _bgr_tensor(image)

    def run(self, image: U8Image) -> F32Array:
        result = self._request.infer({0: self._input(image)})
        matte = np.array(result[0], dtype=np.float32)
        matte = matte.reshape(matte.shape[-2:])
        if matte.shape != image.shape[:2]:  # a smaller network size: back to the frame's
            matte = np.asarray(
                cv2.resize(matte, image.shape[1::-1], interpolation=cv2.INTER_LINEAR), np.float32
            )
        return matte

    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        x = self._input(image)
        window = _Window(seconds)
        self._queue.set_callback(lambda request, userdata: window.done())
        while not window.finished():
            self._queue.start_async({0: x})  # blocks while every request is busy
        window.close()
        self._queue.wait_all()
        return window.result()

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
        window = _Window(seconds)
        stop = threading.Event()

        def worker(i: int) -> None:
            try:
                while not stop.is_set():
                    self._tput.run(None, {self._name: x})
                    window.done()
            finally:
                stop.set()  # a failing caller ends the window instead of hanging it

        def until_done(i: int) -> None:
            while not window.finished() and not stop.is_set():
                time.sleep(0.002)
            window.close()
            stop.set()

        _run_threads(lambda i: until_done(i) if i == self.streams else worker(i), self.streams + 1)
        return window.result()

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

        from toolkit.model.checkpoint import load_model

        torch.set_num_threads(self.cores)
        self._model = load_model(self.checkpoint)
        self.row.config = {"torch": str(torch.__version__), "threads": self.cores}

    def run(self, image: U8Image) -> F32Array:
        import torch

        with torch.no_grad():
            out = self._model(torch.from_numpy(_rgb_normalised(image)))
        return np.asarray(out.numpy(), dtype=np.float32).reshape(image.shape[:2])

    def throughput(self, image: U8Image, seconds: float) -> tuple[int, float, float]:
        window = _Window(seconds)
        while not window.finished():
            self.run(image)
            window.done()
        window.close()
        return window.result()

    def close(self) -> None:
        self._model = None


class _Window:
    """The steady-state rate of a busy period: completions counted from the first one to the
    moment the caller stops feeding work.

    Counting from the start would include the pipeline filling up; waiting for the last
    requests would include the drain, where some streams idle while others finish. Both
    hurt multi-stream candidates more than sequential ones, and more the shorter the window;
    the window between the first completion and the stop has neither.
    """

    #: Completions after the first one before a window may close (a rate needs a few frames).
    MIN_FRAMES = 4

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds
        self.times: list[float] = []
        self.first_cpu = 0.0
        self.end = 0.0
        self.end_cpu = 0.0
        self._lock = threading.Lock()

    def done(self) -> None:
        """One frame finished (called from any thread)."""
        now, cpu = time.perf_counter(), time.process_time()
        with self._lock:
            if not self.times:
                self.first_cpu = cpu
            self.times.append(now)

    def finished(self) -> bool:
        with self._lock:
            frames = len(self.times) - 1
        elapsed = time.perf_counter() - self.start
        return frames >= self.MIN_FRAMES and elapsed >= self.seconds

    def close(self) -> None:
        """Stop counting: completions after this moment belong to the drain."""
        self.end, self.end_cpu = time.perf_counter(), time.process_time()

    def result(self) -> tuple[int, float, float]:
        with self._lock:
            first = self.times[0]
            frames = sum(1 for t in self.times if first < t <= self.end)
        return frames, self.end - first, self.end_cpu - self.first_cpu


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
    """A ``size`` video of the bundled photo, slowly panning and zooming (H.264 in .mp4 at 25
    frames/s, what a phone or a webcam recorder would hand over), written atomically."""
    from fractions import Fraction

    from toolkit.matting.images import load_image
    from toolkit.matting.videowriter import CODECS, VideoWriter, plan_encoding

    base = load_image(paths.sample_image())
    width, height = size
    cover = max(width / base.shape[1], height / base.shape[0])  # scale that fills the frame
    encoding = plan_encoding(CODECS["h264"], 18, width, height)
    rate = Fraction(25)
    with VideoWriter(
        dest, width=width, height=height, encoding=encoding, time_base=1 / rate, rate=rate
    ) as writer:
        for i in range(frames):
            zoom = cover * (1.1 + 0.05 * math.sin(i / 15.0))  # always >= cover
            canvas_w = max(width, math.ceil(base.shape[1] * zoom))
            canvas_h = max(height, math.ceil(base.shape[0] * zoom))
            canvas = cv2.resize(base, (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR)
            x = int((canvas_w - width) * (0.5 + 0.4 * math.sin(i / 20.0)))
            y = (canvas_h - height) // 2
            writer.write(np.ascontiguousarray(canvas[y : y + height, x : x + width]), i)
    return dest


class VideoCandidate:
    """The ``infer`` runner on a video file, with a session made once (compiled and warm)."""

    def __init__(
        self, row: VideoRow, make_session: Callable[[], Any], video: Path, *, alpha: bool = True
    ) -> None:
        self.row = row
        self.make_session = make_session
        self.video = video
        self.alpha = alpha  # also write the matte video (infer's default), or only the composite
        self.session: Any = None
        self._out: tempfile.TemporaryDirectory[str] | None = None

    def setup(self) -> None:
        self.session = self.make_session()
        self._out = tempfile.TemporaryDirectory(prefix="modnet-bench-video-")

    def measure(self, max_frames: int | None = None) -> float:
        from toolkit.matting.batch import InferOptions, run_infer
        from toolkit.matting.images import InputItem
        from toolkit.matting.prepost import OMZ_BACKGROUND_BGR, Background

        assert self._out is not None
        options = InferOptions(
            output_dir=Path(self._out.name),
            background=Background(color=OMZ_BACKGROUND_BGR, description="omz"),
            rgba=False,
            alpha=self.alpha,
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
