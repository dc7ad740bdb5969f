"""The benchmark's results: rows, the report with its ratios and JSON, the machine's
description and arithmetic peak, and the rich tables the CLI prints.

Kept apart from the measuring (:mod:`toolkit.perf.benchmark`, :mod:`toolkit.perf.backends`) so
that reading or rendering a report needs no runtime at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.errors import ToolkitError
from toolkit.fsutil import atomic_path

#: The network's cost at 512x512 (Open Model Zoo's model card; 15.47 GMAC counted here).
GFLOP_PER_FRAME = 31.16
VIDEO_SIZE = (1280, 720)


class BenchmarkError(ToolkitError):
    """Nothing to benchmark, or a model the benchmark needs is missing."""


# --- results -------------------------------------------------------------------------------


#: A sample counts as clean when other processes used at most this share of the machine's CPU
#: while it was taken; with at least MIN_CLEAN clean samples, only those are summarised.
CLEAN_SHARE = 0.10
MIN_CLEAN = 3


@dataclass
class Sample:
    """One round of one candidate: its latencies, its throughput window, and how busy the rest
    of the machine was meanwhile (``others``: share of all cores used by other processes)."""

    latency_ms: list[float]
    fps: float
    cpu_ms_per_frame: float
    others: float | None = None


def _clean(samples: list[Any]) -> list[Any]:
    """The samples taken on a quiet machine, when there are enough of them; else all.

    The machine this was built on is shared: a burst of someone else's work hurts whichever
    candidate is running at that moment. Setting those samples aside (and saying how many
    were kept) is more honest than letting one burst decide a ratio.
    """
    quiet = [s for s in samples if s.others is None or s.others <= CLEAN_SHARE]
    return quiet if len(quiet) >= MIN_CLEAN else samples


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
    samples: list[Sample] = field(default_factory=list)
    drift_mean: float | None = None
    drift_max: float | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None

    def clean(self) -> list[Sample]:
        return _clean(self.samples)

    @property
    def latency_ms(self) -> list[float]:
        return [ms for s in self.clean() for ms in s.latency_ms]

    @property
    def throughput_fps(self) -> list[float]:
        return [s.fps for s in self.clean()]

    def latency_median(self) -> float | None:
        values = self.latency_ms
        return statistics.median(values) if values else None

    def latency_p90(self) -> float | None:
        values = self.latency_ms
        return _percentile(values, 90) if values else None

    def throughput(self) -> float | None:
        values = self.throughput_fps
        return statistics.median(values) if values else None

    def cpu_ms_per_frame(self) -> float | None:
        values = [s.cpu_ms_per_frame for s in self.clean()]
        return statistics.median(values) if values else None

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            latency_median_ms=self.latency_median(),
            latency_p90_ms=self.latency_p90(),
            throughput_median_fps=self.throughput(),
            cpu_ms_per_frame_median=self.cpu_ms_per_frame(),
            samples_used=len(self.clean()),
        )
        return data


@dataclass
class VideoSample:
    fps: float
    others: float | None = None


@dataclass
class VideoRow:
    """End-to-end video: the ``infer`` path's frames/s vs the same model's raw throughput."""

    key: str
    label: str
    raw_key: str
    frames: int
    size: tuple[int, int]
    samples: list[VideoSample] = field(default_factory=list)
    error: str | None = None

    def median(self) -> float | None:
        values = [s.fps for s in _clean(self.samples)]
        return statistics.median(values) if values else None

    def summary(self, rows: dict[str, Row]) -> dict[str, Any]:
        raw = rows[self.raw_key].throughput() if self.raw_key in rows else None
        e2e = self.median()
        return {
            **asdict(self),
            "samples_used": len(_clean(self.samples)),
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

    def contention(self) -> dict[str, Any]:
        """How busy the rest of the machine was: the median share of all cores other
        processes used while samples were taken, and how many samples counted as clean."""
        shares = [s.others for row in self.rows for s in row.samples if s.others is not None] + [
            s.others for v in self.video for s in v.samples if s.others is not None
        ]
        total = sum(len(r.samples) for r in self.rows) + sum(len(v.samples) for v in self.video)
        used = sum(len(r.clean()) for r in self.rows) + sum(
            len(_clean(v.samples)) for v in self.video
        )
        return {
            "others_share_median": statistics.median(shares) if shares else None,
            "others_share_max": max(shares) if shares else None,
            "samples": total,
            "samples_used": used,
            "clean_threshold": CLEAN_SHARE,
        }

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
            "contention": self.contention(),
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


# --- the machine --------------------------------------------------------------------------


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields[:8]]
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / float(os.sysconf("SC_CLK_TCK"))


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
    with contextlib.suppress(ImportError):
        from toolkit.matting.runtime import cpu_capabilities

        caps = cpu_capabilities()
        # The features the peak and the rows depend on (avx2, avx512, vnni, bf16, amx), as
        # OpenVINO and the CPU report them (or as $MODNET_TOOLS_CPU_CAPS says).
        info["isa"] = sorted(caps.features)
        info["instruction_sets"] = caps.instruction_sets()
        info["openvino_capabilities"] = sorted(caps.openvino)
        info["capabilities_from"] = caps.source
        info["fp32_lanes"] = caps.fp32_lanes()
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

    The vector width is the CPU's own (``machine["isa"]``, from
    :func:`toolkit.matting.runtime.cpu_capabilities`): 16 FP32 lanes with AVX-512, 8 with
    AVX2, two FMA pipes a core, 2 FLOP an FMA. AMD Zen 4 (AVX-512 on an AMD CPU) runs AVX-512
    on two 256-bit pipes, so 8 lanes' worth a pipe. bf16 dot products (AVX512_BF16) double the
    products a lane; INT8 with VNNI does 4 u8 x s8 products a 32-bit lane (without VNNI, two
    instructions do what one does: 2x FP32). AMX tiles do far more (1024 bf16 and 2048 INT8
    operations a cycle a core). The clock is /proc/cpuinfo's (a VM reports the nominal clock;
    turbo may be higher). These are assumptions from the micro-architecture, stated in the output.
    """
    isa = set(machine.get("isa", []))
    amd_zen4 = machine.get("vendor") == "AuthenticAMD" and "avx512" in isa
    if "avx512" in isa:
        lanes = 8 if amd_zen4 else 16
        width = "2 x 256-bit FMA pipes (AVX-512 split in halves)" if amd_zen4 else "2 x 512-bit FMA"
    elif "avx2" in isa:
        lanes, width = 8, "2 x 256-bit FMA (AVX2)"
    else:
        lanes, width = 4, "2 x 128-bit FMA (SSE)"
    fp32 = 2 * lanes * 2
    per_cycle = {"fp32": fp32}
    if "bf16" in isa:
        per_cycle["bf16"] = 1024 if "amx" in isa else 2 * fp32
    per_cycle["int8"] = 2048 if "amx" in isa else (4 if "vnni" in isa else 2) * fp32
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
        ("rounds used", "right"),
        ("matte vs FP32 f32: mean", "right"),
        ("max", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        if not row.ok:
            why = row.skipped or f"error: {row.error}"
            table.add_row(row.label, row.model, row.precision, why, *[""] * 7)
            continue
        fps = row.throughput()
        cpu = row.cpu_ms_per_frame()
        table.add_row(
            row.label + (f" ({row.key})" if row.backend == "onnxruntime" else ""),
            row.model,
            row.precision,
            _fmt(row.latency_median(), ".1f"),
            _fmt(row.latency_p90(), ".1f"),
            _fmt(fps, ".2f"),
            _fmt(_ratio(fps, ort), ".2f"),
            _fmt(cpu, ".0f"),
            f"{len(row.clean())}/{len(row.samples)}",
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
    lines += _size_lines(rows, report.settings.get("size") or (512, 512))
    for video in report.video:
        ratio = ratios.get(f"video_{video.key}_vs_raw")
        if ratio is not None:
            lines.append(f"720p video, {video.label}: {ratio:.2f}x the IR's raw throughput")
    busy = report.contention()
    if busy["others_share_median"] is not None:
        lines.append(
            f"other processes used {100 * busy['others_share_median']:.0f}% of the CPU (median; "
            f"max {100 * busy['others_share_max']:.0f}%) while samples were taken; "
            f"{busy['samples_used']} of {busy['samples']} samples used (rounds where others took "
            f"over {100 * CLEAN_SHARE:.0f}% are set aside when at least {MIN_CLEAN} clean remain)"
        )
    machine = report.machine
    if machine.get("instruction_sets") is not None:
        lines.insert(0, cpu_line(machine))
    load = machine.get("loadavg")
    after = machine.get("loadavg_after")
    if load:
        lines.append(
            f"load average before {load[0]:.2f}"
            + (f", after {after[0]:.2f}" if after else "")
            + f" on {machine.get('cores')} cores"
        )
    peak = machine.get("peak") or peak_estimate(machine)
    if peak.get("pipes"):
        lines.append(f"vector width: {peak['pipes']} a core (from the instruction sets above)")
    for kind in ("fp32", "bf16", "int8"):
        if kind in peak and peak[kind]["max_fps"]:
            lines.append(
                f"peak {kind}: {peak['cores']} cores x {peak['ghz']:.2f} GHz x "
                f"{peak['per_cycle_per_core'][kind]} per cycle = {peak[kind]['gflop_s']:.0f} "
                f"G{'OP' if kind == 'int8' else 'FLOP'}/s -> at most "
                f"{peak[kind]['max_fps']:.1f} frames/s at {GFLOP_PER_FRAME} GFLOP a frame"
            )
    lines += _achieved_lines(rows, peak)
    return lines


def cpu_line(machine: dict[str, Any]) -> str:
    """What the CPU has, as the benchmark read it: the rows it can run natively follow."""
    sets = ", ".join(machine.get("instruction_sets") or []) or "none of AVX2, AVX-512, bf16"
    missing = [
        name
        for name in ("AVX2", "AVX-512", "VNNI", "bf16", "AMX")
        if name not in (machine.get("instruction_sets") or [])
    ]
    return (
        f"CPU: {machine.get('cpu') or '?'}, {machine.get('cores')} cores; instruction sets: {sets}"
        + (f" (no {', '.join(missing)})" if missing else "")
        + f"; OpenVINO capabilities: {', '.join(machine.get('openvino_capabilities') or [])}"
        + f"; from {machine.get('capabilities_from', 'OpenVINO')}"
    )


def _size_lines(rows: dict[str, Row], full_size: Sequence[int]) -> list[str]:
    """Each network size against the IR's own (the FP32 IR at f32): speed ratio and drift."""
    full = f"{full_size[1]}x{full_size[0]}"
    reference = rows.get("ov-FP32-f32")
    base = reference.throughput() if reference is not None and reference.ok else None
    lines = []
    for key, row in rows.items():
        if not key.startswith("size-") or not row.ok:
            continue
        fps = row.throughput()
        ratio = _ratio(fps, base)
        if ratio is None:
            continue
        lines.append(
            f"{key[5:]} / {full} throughput (FP32 IR at f32): {ratio:.2f}x; matte vs the "
            f"{full} matte (upsampled): mean |diff| {_fmt(row.drift_mean, '.4f')}, "
            f"max {_fmt(row.drift_max, '.3f')}"
        )
    return lines


def _achieved_lines(rows: dict[str, Row], peak: dict[str, Any]) -> list[str]:
    """What the FP32 IR at f32 reaches against the FP32 peak at the clock /proc/cpuinfo gives.

    That clock is the nominal one (in a VM, the TSC's); a CPU boosting above it can beat the
    "peak", and then the share says how fast the cores must at least be running.
    """
    row = rows.get("ov-FP32-f32")
    fps = row.throughput() if row is not None and row.ok else None
    if not fps or "fp32" not in peak or not peak["fp32"]["gflop_s"]:
        return []
    achieved = fps * GFLOP_PER_FRAME
    share = achieved / peak["fp32"]["gflop_s"]
    line = (
        f"achieved: OpenVINO FP32 IR at f32 {achieved:.0f} GFLOP/s = {100 * share:.0f}% of the "
        f"fp32 peak at {peak['ghz']:.2f} GHz"
    )
    if share > 1:
        line += (
            f" (above it: the cores boost beyond the nominal clock, to at least "
            f"{peak['ghz'] * share:.2f} GHz)"
        )
    return [line]
