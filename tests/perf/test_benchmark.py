"""benchmark: every candidate really runs, the report has the structure the README relies on.

Tiny rounds on the 128x128 model tree (tests/perf/fixtures.py). Timings are never asserted
(the machine is shared); only that each number exists, is positive and lands where expected.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error
from toolkit.matting.runtime import CAPS_ENV, cpu_capabilities

#: The inference precisions this CPU runs natively (bf16 only where OpenVINO says so).
HINTS = ("f32", "bf16") if cpu_capabilities().bf16 else ("f32",)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # ten candidates compiled and loaded (PyTorch too): about 25 s here
def test_every_candidate_is_measured_side_by_side(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.benchmark import plan, run_benchmark

    bench = plan(perf_model.root, perf_model.name)
    assert bench.size == (128, 128)
    report = run_benchmark(bench, rounds=2, seconds=0.05, drift_images=2)
    rows = report.by_key()
    expected = {f"ov-{p}-{h}" for p in ("FP32", "FP16", "FP16-INT8") for h in HINTS} | {
        "fast",
        "ort-1x2",
        "ort-2x1",
        "pytorch",
    }
    assert expected <= set(rows), sorted(rows)
    for key in expected:
        row = rows[key]
        assert row.ok, (key, row.error, row.skipped)
        assert len(row.samples) == 2, key  # one sample a round
        assert all(_positive(v) for v in row.latency_ms + row.throughput_fps), key
        assert all(s.others is None or 0.0 <= s.others <= 1.0 for s in row.samples)
        assert _positive(row.latency_median()) and row.latency_p90() >= row.latency_median()
        assert row.drift_mean is not None and row.drift_max is not None
    # The reference agrees with itself; ONNX Runtime and PyTorch agree with it at f32.
    assert rows["ov-FP32-f32"].drift_max == 0.0
    assert rows["ort-2x1"].drift_max < 1e-3 and rows["pytorch"].drift_max < 1e-3
    # INT8 really differs (it is a different computation); the fast row is what --fast chose.
    assert rows["ov-FP16-INT8-f32"].drift_mean > 0
    choice = rows["fast"].config["choice"]  # measured here: FP32 at bf16, INT8, or FP32 at f32
    assert rows["fast"].model == Path(choice["xml"]).parent.name
    ratios = report.ratios()
    assert _positive(ratios["openvino_fp32_f32_vs_onnxruntime"])
    assert _positive(ratios["fast_vs_onnxruntime"])


def test_openvino_rows_record_the_configuration_they_ran(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.benchmark import plan, run_benchmark

    bench = plan(
        perf_model.root,
        perf_model.name,
        ir_precisions=["FP32"],
        inference_precisions=["f32"],
        pytorch=False,
        onnxruntime=False,
    )
    report = run_benchmark(bench, rounds=1, seconds=0.0, drift_images=1)
    rows = report.by_key()
    assert set(rows) == {"ov-FP32-f32", "fast"}
    tput = rows["ov-FP32-f32"].config["throughput"]
    assert tput["PERFORMANCE_HINT"] == "THROUGHPUT" and int(tput["requests"]) >= 1
    fast = rows["fast"].config
    choice = fast["choice"]  # what choose_fast measured and picked, kept with the row
    assert fast["INFERENCE_PRECISION_HINT"] == choice["precision"] == rows["fast"].precision
    assert rows["fast"].label == f"infer --fast: {choice['label']}"


def test_missing_pieces_are_skipped_with_a_reason(perf_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from toolkit.perf.benchmark import plan

    root = tmp_path / "root"
    shutil.copytree(perf_model.fp32.parent, root / "public" / perf_model.name / "FP32")
    bench = plan(root, perf_model.name)
    skipped = {row.key: row.skipped for row in bench.skipped}
    assert "ONNX" in skipped["ort"] and "checkpoint" in skipped["pytorch"]
    # Without an INT8 IR, --fast still has a choice: the FP32 IR at bf16 where the CPU has
    # bf16 and it fits the budget, else the FP32 IR at f32 itself.
    assert [c.row.key for c in bench.candidates] == [f"ov-FP32-{h}" for h in HINTS] + ["fast"]
    fast = bench.candidates[-1].row
    assert fast.model == "FP32" and fast.precision in HINTS
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="modnet-tools convert"):
        plan(empty, perf_model.name)


@pytest.mark.parametrize("caps", ["avx2", "avx2,avx512,vnni,bf16,amx"])
def test_rows_the_cpu_cannot_run_natively_are_left_out_with_the_reason(
    perf_model, monkeypatch: pytest.MonkeyPatch, caps: str
) -> None:  # type: ignore[no-untyped-def]
    """Both kinds of CPU, whatever this one is: bf16 rows only where bf16 exists, and the
    peak lines at the CPU's own vector width."""
    from toolkit.perf.benchmark import plan
    from toolkit.perf.report import machine_info, peak_estimate

    monkeypatch.setenv(CAPS_ENV, caps)
    bench = plan(perf_model.root, perf_model.name, ir_precisions=["FP32"], fast=False,
                 pytorch=False, onnxruntime=False)  # fmt: skip
    keys = [c.row.key for c in bench.candidates]
    skipped = {row.key: row.skipped for row in bench.skipped}
    machine = machine_info()
    peak = peak_estimate({**machine, "mhz": 2000.0, "cores": 2})
    if "bf16" in caps:
        assert keys == ["ov-FP32-f32", "ov-FP32-bf16"] and "ov-FP32-bf16" not in skipped
        assert machine["instruction_sets"] == ["AVX2", "AVX-512", "VNNI", "bf16", "AMX"]
        assert peak["per_cycle_per_core"]["bf16"] == 1024  # AMX tiles
    else:
        assert keys == ["ov-FP32-f32"] and "no bf16" in str(skipped["ov-FP32-bf16"])
        assert machine["instruction_sets"] == ["AVX2"] and machine["fp32_lanes"] == 8
        # 2 pipes x 8 lanes x 2 (FMA); INT8 without VNNI: twice that; no bf16 line at all
        assert peak["per_cycle_per_core"] == {"fp32": 32, "int8": 64}


def test_benchmark_cli_writes_tables_and_json(
    run_cli, perf_model, perf_int8, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "reports" / "bench.json"
    result = run_cli(
        "benchmark",
        "-o",
        perf_model.root,
        "--precision",
        "FP32",
        "--no-pytorch",
        "--rounds",
        "1",
        "--seconds",
        "0.05",
        "--video-frames",
        "4",
        "--drift-images",
        "1",
        "--json",
        report,
    )
    assert result.returncode == 0, result.stderr
    for text in (
        "OpenVINO FP32 IR",
        "ONNX Runtime",
        "infer --fast",
        "720p video",
        "/ ONNX Runtime throughput",
        "peak fp32",
        "rounds used",
        "other processes used",
    ):
        assert text in result.stdout, text
    data = json.loads(report.read_text())
    assert data["gflop_per_frame"] == pytest.approx(31.16)
    keys = {r["key"] for r in data["results"]}
    assert {f"ov-FP32-{h}" for h in HINTS} | {"fast", "ort-1x2", "ort-2x1"} <= keys
    assert "instruction sets:" in result.stdout and "vector width" in result.stdout
    for row in data["results"]:
        if row["key"] in keys - {"pytorch"} and row["skipped"] is None:
            assert _positive(row["throughput_median_fps"]) and _positive(row["latency_median_ms"])
    videos = {v["key"]: v for v in data["video"]}
    assert set(videos) == {"infer", "infer-alpha", "fast", "fast-alpha"}
    for video in videos.values():
        assert video["frames"] == 4 and video["size"] == [1280, 720]
        assert _positive(video["fps_median"]) and _positive(video["ratio_to_raw"])
    for key in ("infer", "infer-alpha"):
        assert videos[key]["raw_key"] == "ov-FP32-f32"
    for key in ("fast", "fast-alpha"):
        assert videos[key]["raw_key"] == "fast"
    assert "--no-alpha" in videos["infer"]["label"] and "matte" in videos["infer-alpha"]["label"]
    for key in ("openvino_fp32_f32_vs_onnxruntime", "fast_vs_onnxruntime", "video_fast_vs_raw"):
        assert _positive(data["ratios"][key]), key
    busy = data["contention"]
    assert busy["samples"] >= busy["samples_used"] >= 1
    assert all(len(r["samples"]) == 1 for r in data["results"] if r["skipped"] is None)
    machine = data["machine"]
    assert machine["cores"] >= 1 and "loadavg" in machine
    assert _positive(machine["peak"]["fp32"]["gflop_s"])
    assert not list(report.parent.glob(".*")), "the JSON is written atomically"


def test_benchmark_without_a_converted_model_says_what_to_run(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("benchmark", "-o", tmp_path, "--video-frames", "0")
    assert_one_line_error(result, "modnet-tools convert")


def test_benchmark_json_that_cannot_be_written_is_one_line(
    run_cli, perf_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(
        "benchmark",
        "-o",
        perf_model.root,
        "--precision",
        "FP32",
        "--inference-precision",
        "f32",
        "--no-pytorch",
        "--no-onnxruntime",
        "--no-fast",
        "--rounds",
        "1",
        "--seconds",
        "0",
        "--video-frames",
        "0",
        "--drift-images",
        "0",
        "--json",
        blocker / "b.json",
    )
    assert_one_line_error(result, "--json")


@pytest.mark.parametrize(
    "args",
    [
        ["--precision", "INT4"],
        ["--inference-precision", "f64"],
        ["--rounds", "0"],
        ["--name", "a/b"],
    ],
)
def test_benchmark_usage_errors_exit_2(run_cli, args) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("benchmark", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


#: This machine's CPU as machine_info() describes it (nominal clock, AVX-512 with bf16 and VNNI).
ZEN4 = {
    "vendor": "AuthenticAMD",
    "isa": ["avx2", "avx512", "vnni", "bf16"],
    "mhz": 2600.0,
    "cores": 2,
}


def test_peak_estimate_states_its_assumptions() -> None:
    from toolkit.perf.benchmark import peak_estimate

    peak = peak_estimate(ZEN4)
    assert peak["per_cycle_per_core"] == {"fp32": 32, "bf16": 64, "int8": 128}
    assert peak["fp32"]["gflop_s"] == pytest.approx(2 * 2.6 * 32)
    assert peak["fp32"]["max_fps"] == pytest.approx(2 * 2.6 * 32 / 31.16)
    intel = peak_estimate({"vendor": "GenuineIntel", "isa": ["avx512"], "mhz": 3000.0, "cores": 4})
    assert intel["per_cycle_per_core"] == {"fp32": 64, "int8": 128}
    epyc_avx2 = peak_estimate(
        {"vendor": "AuthenticAMD", "isa": ["avx2"], "mhz": 3000.0, "cores": 2}
    )
    assert epyc_avx2["per_cycle_per_core"] == {"fp32": 32, "int8": 64}
    assert "AVX2" in epyc_avx2["pipes"]


def test_generated_video_is_720p_in_every_frame(tmp_path: Path) -> None:
    import cv2

    from toolkit.perf.benchmark import make_video

    # 100 frames: the pan and zoom go through their whole range (a zoom below the frame
    # size once produced 1279x719 crops).
    path = make_video(tmp_path / "v.mp4", 100)
    cap = cv2.VideoCapture(str(path))
    shapes = []
    first = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        shapes.append(frame.shape)
    cap.release()
    assert len(shapes) == 100 and set(shapes) == {(720, 1280, 3)}
    assert first is not None and float(first.std()) > 20  # a picture, not a flat field


def test_samples_taken_while_the_machine_was_busy_are_set_aside() -> None:
    from toolkit.perf.report import Row, Sample

    row = Row("k", "label", "openvino", "FP32", "f32", "x.xml")
    row.samples = [Sample([10.0], 5.0, 400.0, 0.02) for _ in range(3)]
    row.samples.append(Sample([90.0], 1.0, 420.0, 0.6))  # someone else's burst
    assert row.throughput() == 5.0 and row.latency_median() == 10.0
    assert len(row.clean()) == 3
    noisy = Row("k", "label", "openvino", "FP32", "f32", "x.xml")
    noisy.samples = [Sample([10.0], 5.0, 400.0, 0.5), Sample([20.0], 3.0, 400.0, 0.01)]
    assert len(noisy.clean()) == 2  # too few clean ones: every sample counts


def test_the_fp32_row_is_set_against_the_peak_and_a_boosting_cpu_is_named() -> None:
    from toolkit.perf.report import BenchmarkReport, Row, Sample, summary_lines

    def lines(fps: float) -> list[str]:
        row = Row("ov-FP32-f32", "OpenVINO FP32 IR", "openvino", "FP32", "f32", "x.xml")
        row.samples = [Sample([100.0], fps, 300.0, 0.0)]
        report = BenchmarkReport([row], [], {}, ZEN4)
        return [ln for ln in summary_lines(report) if ln.startswith("achieved:")]

    # 166.4 GFLOP/s peak at 2.6 GHz; 4 frames/s x 31.16 = 124.6 GFLOP/s = 75 %.
    [line] = lines(4.0)
    assert "125 GFLOP/s = 75% of the fp32 peak at 2.60 GHz" in line and "boost" not in line
    # 6.25 frames/s = 194.8 GFLOP/s: more than the nominal clock allows.
    [line] = lines(6.25)
    assert "117% of the fp32 peak" in line and "at least 3.04 GHz" in line


def test_quick_benchmark_on_an_avx2_only_cpu_shows_what_it_runs(
    run_cli, perf_model, perf_int8, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``--quick`` with the override standing for an AVX2-only CPU: the instruction sets are
    printed, no bf16 row is presented as bf16, the peak is at AVX2's width, the network-size
    rows are measured against the full size, and the ETA is shown while it runs."""
    report = tmp_path / "quick.json"
    result = run_cli(
        "benchmark", "-o", perf_model.root, "--quick", "--seconds", "0.1",
        "--network-size", "96x64", "--network-size", "64x64", "--json", report,
        env={CAPS_ENV: "avx2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "instruction sets: AVX2 (no AVX-512, VNNI, bf16, AMX)" in out
    assert "vector width: 2 x 256-bit FMA (AVX2)" in out
    assert "peak fp32: " in out and "peak bf16" not in out
    assert "96x64 / 512x512 throughput" not in out  # the full size is this IR's, 128x128
    assert "96x64 / 128x128 throughput" in out and "64x64 / 128x128 throughput" in out
    assert "about" in result.stderr and "left" in result.stderr  # the ETA
    data = json.loads(report.read_text())
    rows = {r["key"]: r for r in data["results"]}
    assert "no bf16" in str(rows["ov-FP32-bf16"]["skipped"])
    assert rows["fast"]["precision"] == "f32"  # what --fast runs on such a CPU
    for key in ("size-96x64", "size-64x64", "ov-FP32-f32", "ov-FP16-INT8-f32"):
        assert rows[key]["skipped"] is None and rows[key]["throughput_median_fps"] > 0, key
    assert rows["size-64x64"]["drift_mean"] > 0  # a smaller input is a different matte
    assert "pytorch" not in rows and data["settings"]["quick"] is True
    assert data["machine"]["instruction_sets"] == ["AVX2"]
