"""The README's configuration end to end: 512x512 IRs of the tame checkpoint, quantized, then
``modnet-tools benchmark`` with every row and the 720p video (slow: minutes, not seconds).

Timings are not asserted; the test proves that one run produces every figure issue 6 asks
for (the ratios, the fast mode's drift, the video ratio) and that they are sane numbers.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nncf")


@pytest.mark.slow
def test_quantize_and_benchmark_the_512_model(run_cli, converted_tame, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = "modnet-webcam-portrait-matting"
    root = tmp_path / "root"  # a copy: the shared fixture's tree must not gain an INT8 IR
    folder = root / "public" / name
    shutil.copytree(converted_tame.fp32.parent, folder / "FP32")
    shutil.copyfile(converted_tame.onnx, folder / converted_tame.onnx.name)
    shutil.copyfile(converted_tame.checkpoint, folder / "modnet_webcam_portrait_matting.ckpt")

    # A fixed scope (the budget search is tested in test_budget.py; here it would add minutes).
    quantized = run_cli("quantize", "-o", root, "--subset-size", "4", "--ignore", "fusion+norm")
    assert quantized.returncode == 0, quantized.stderr
    assert (folder / "FP16-INT8" / f"{name}.xml").is_file()

    report = tmp_path / "bench.json"
    bench = run_cli(
        "benchmark",
        "-o",
        root,
        "--rounds",
        "2",
        "--seconds",
        "0.5",
        "--video-frames",
        "8",
        "--drift-images",
        "2",
        "--explore",
        "--json",
        report,
        timeout=1200,
    )
    assert bench.returncode == 0, bench.stderr
    data = json.loads(report.read_text())
    rows = {r["key"]: r for r in data["results"]}
    from toolkit.matting.runtime import cpu_capabilities

    bf16 = ("ov-FP32-bf16", "ov-FP16-INT8-bf16") if cpu_capabilities().bf16 else ()
    for key in (
        "ov-FP32-f32",
        *bf16,
        "ov-FP16-INT8-f32",
        "fast",
        "fast-u8",
        "fast-1stream",
        "fast-4req",
        "ort-1x2",
        "ort-2x1",
        "pytorch",
    ):
        row = rows[key]
        assert row["error"] is None and row["skipped"] is None, (key, row)
        assert row["throughput_median_fps"] > 0 and row["latency_median_ms"] > 0
    # Accuracy next to speed: exact rows agree, the INT8 rows drift but stay a matte.
    assert rows["ov-FP32-f32"]["drift_max"] == 0.0
    assert rows["ort-2x1"]["drift_max"] < 1e-3 and rows["pytorch"]["drift_max"] < 1e-3
    assert rows["fast-u8"]["drift_max"] == pytest.approx(rows["fast"]["drift_max"], abs=1e-3)
    # What --fast chose on this CPU within its 1/255 budget (0 when that is the FP32 IR at f32).
    assert 0 <= rows["fast"]["drift_mean"] < 0.05
    ratios = data["ratios"]
    for key in (
        "openvino_fp32_f32_vs_onnxruntime",
        "fast_vs_onnxruntime",
        "video_infer_vs_raw",
        "video_fast_vs_raw",
        "video_infer-alpha_vs_raw",
        "video_fast-alpha_vs_raw",
    ):
        assert math.isfinite(ratios[key]) and ratios[key] > 0, key
    assert {v["key"] for v in data["video"]} == {"infer", "infer-alpha", "fast", "fast-alpha"}
    assert all(v["frames"] == 8 for v in data["video"])
