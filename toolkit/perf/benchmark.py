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
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from toolkit import paths
from toolkit.errors import ToolkitError, one_line
from toolkit.perf.backends import (
    Candidate,
    OnnxRuntimeCandidate,
    OpenVINOCandidate,
    PyTorchCandidate,
    VideoCandidate,
    make_video,
)
from toolkit.perf.budget import Budget
from toolkit.perf.report import (
    GFLOP_PER_FRAME,
    VIDEO_SIZE,
    BenchmarkError,
    BenchmarkReport,
    Row,
    Sample,
    VideoRow,
    VideoSample,
    cpu_busy_seconds,
    cpu_count,
    machine_info,
    peak_estimate,
    results_table,
    summary_lines,
    video_table,
)

U8Image = npt.NDArray[np.uint8]

IR_PRECISIONS = ("FP32", "FP16", "FP16-INT8")
INFERENCE_PRECISIONS = ("f32", "bf16")

__all__ = [
    "GFLOP_PER_FRAME",
    "INFERENCE_PRECISIONS",
    "IR_PRECISIONS",
    "BenchmarkError",
    "BenchmarkReport",
    "Plan",
    "machine_info",
    "make_video",
    "peak_estimate",
    "plan",
    "results_table",
    "run_benchmark",
    "summary_lines",
    "video_file",
    "video_table",
]


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
    network_sizes: Sequence[tuple[int, int]] = (),
    fast_budget: Budget | None = None,
    onnxruntime_configs: int | None = None,
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
            f"no FP32 IR at {paths.ir_xml(root, name, 'FP32').absolute()}: point -o (or "
            "$MODNET_TOOLS_HOME) at the folder `convert -o` wrote, or run `modnet-tools convert` "
            "first "
            "(the FP32 IR at f32 is the reference every other row is compared with)"
        )
    from toolkit.matting.runtime import cpu_capabilities

    caps = cpu_capabilities(device)
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
            if not caps.runs(hint):  # OpenVINO would run f32 and the row would lie
                row.skipped = f"this CPU has no {hint} ({', '.join(caps.instruction_sets())})"
                skipped.append(row)
                continue
            candidates.append(OpenVINOCandidate(row, xml, precision=hint, device=device))
    for height, width in network_sizes:
        if (height, width) == _static_size(found["FP32"]):
            continue  # that is the FP32 row itself
        row = Row(
            f"size-{width}x{height}",
            f"OpenVINO FP32 IR at {width}x{height}",
            "openvino",
            "FP32",
            "f32",
            str(found["FP32"]),
        )
        candidates.append(
            OpenVINOCandidate(
                row, found["FP32"], precision="f32", device=device, network_size=(height, width)
            )
        )
    if fast:
        from toolkit.perf.fastpath import FastModeUnavailable, choose_fast

        try:
            # Chosen on this CPU, by measurement, within the default budget: what infer runs.
            choice = choose_fast(root, name, device=device, budget=fast_budget)
            row = Row(
                "fast",
                f"infer --fast: {choice.label}",
                "openvino",
                _ir_folder(choice.xml),
                choice.precision,
                str(choice.xml),
            )
            row.config = {"choice": choice.to_json()}
            candidates.append(
                OpenVINOCandidate(row, choice.xml, precision=choice.precision, device=device)
            )
            if explore:
                candidates.extend(_explore(choice.xml, choice.precision, device))
        except FastModeUnavailable as exc:
            skipped.append(_skip("fast", "infer --fast", str(exc)))
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
            configs = sorted({1, cores}, reverse=True)[: onnxruntime_configs or None]
            for streams in sorted(configs):
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


def _ir_folder(xml: Path) -> str:
    """``FP32``, ``FP16-INT8``...: the precision folder an IR sits in."""
    return xml.parent.name


def _static_size(xml: Path) -> tuple[int, int]:
    """The IR's static (H, W); 512x512 for an IR with dynamic height and width."""
    from toolkit.matting.runtime import core

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
    """The default infer path (FP32 IR at f32) and the fast mode, on the same video, each
    writing the composite only (what OMZ's demo writes: ``-b omz --no-alpha``) and the
    composite plus the matte video (``-b omz``, a second encode per frame)."""
    from toolkit.matting.session import MattingSession

    def fp32_session() -> Any:
        return MattingSession.from_xml(
            fp32, device=device, precision="f32", performance="throughput"
        )

    setups: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("infer", "infer -b omz", "ov-FP32-f32", fp32_session)
    ]
    fast = next((c for c in candidates if c.row.key == "fast"), None)
    if fast is not None:
        xml = Path(fast.row.path)
        hint = fast.row.precision

        def fast_video_session() -> Any:
            return MattingSession.from_xml(
                xml,
                device=device,
                precision=hint,  # type: ignore[arg-type]
                performance="throughput",
            )

        setups.append(("fast", "infer --fast -b omz", "fast", fast_video_session))
    out = []
    for key, label, raw_key, make in setups:
        for alpha in (False, True):
            suffix, text = ("-alpha", " (+ matte video)") if alpha else ("", " --no-alpha")
            row = VideoRow(key + suffix, label + text, raw_key, 0, VIDEO_SIZE)
            out.append(VideoCandidate(row, make, video, alpha=alpha))
    return out


# --- running -------------------------------------------------------------------------------


class Progress(Protocol):
    """What the benchmark tells its caller while it runs (the CLI prints; tests ignore)."""

    def message(self, text: str) -> None: ...


class SilentProgress:
    def message(self, text: str) -> None:
        pass


def run_benchmark(
    bench: Plan,
    *,
    rounds: int = 10,
    seconds: float = 1.0,
    drift_images: int = 8,
    progress: Progress | None = None,
    settings: dict[str, Any] | None = None,
) -> BenchmarkReport:
    """Set every candidate up, measure the drift, then measure round-robin for ``rounds``."""
    from toolkit.perf.calibration import holdout_set

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
    per_round = len(ready) * (seconds * 1.5 + 0.3) + len(bench.video) * 10.0
    progress.message(
        f"measuring {len(ready)} candidates x {rounds} rounds: about "
        f"{int(per_round * rounds // 60)}:{int(per_round * rounds % 60):02d} (an estimate)"
    )
    measuring = time.perf_counter()
    try:
        for r in range(rounds):
            progress.message(f"round {r + 1} of {rounds}" + _eta(measuring, r, rounds))
            for cand in ready:
                if not cand.row.ok:
                    continue
                try:
                    with _Contention() as busy:
                        latencies = cand.latency(image, seconds / 2)
                        frames, wall, cpu = cand.throughput(image, seconds)
                    cand.row.samples.append(
                        Sample(latencies, frames / wall, 1000.0 * cpu / frames, busy.others)
                    )
                except Exception as exc:
                    cand.row.error = _first_line(exc)
            for video in bench.video:
                if video.row.error is None:
                    try:
                        with _Contention() as busy:
                            fps = video.measure()
                        video.row.samples.append(VideoSample(fps, busy.others))
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
        {
            "rounds": rounds,
            "seconds": seconds,
            "drift_images": drift_images,
            "size": list(bench.size),
            **(settings or {}),
        },
        machine,
    )


def _eta(started: float, done: int, total: int) -> str:
    """ ", about M:SS left" from the rounds already measured (the first round has no basis)."""
    if done == 0:
        return ""
    left = (time.perf_counter() - started) / done * (total - done)
    return f", about {int(left // 60)}:{int(left % 60):02d} left"


class _Contention:
    """How much of the machine other processes used while the block ran (0..1, or None where
    /proc/stat is not available): the machine's busy CPU time minus this process's own."""

    others: float | None = None

    def __enter__(self) -> _Contention:
        self._busy = cpu_busy_seconds()
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = cpu_busy_seconds()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (time.process_time() - self._own)
        self.others = min(1.0, max(0.0, other / (wall * cpu_count())))


def _fit(image: U8Image, size: tuple[int, int]) -> U8Image:
    """Resize to the network's (H, W) as infer's stretch mode does (bilinear)."""
    if image.shape[:2] == size:
        return image
    return np.asarray(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))


def _video_frames(path: Path) -> int:
    from toolkit.matting.video import probe_frame_count

    return probe_frame_count(path)


def _measure_drift(
    ready: list[Candidate],
    reference_key: str,
    count: int,
    size: tuple[int, int],
    progress: Progress,
) -> None:
    """Each candidate's matte against the reference's on held-out images (not calibration)."""
    from toolkit.perf.calibration import holdout_set

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
    return one_line(exc, 200)  # the reason, not OpenVINO's source location


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
