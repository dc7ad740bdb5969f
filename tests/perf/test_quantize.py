"""quantize: a real NNCF INT8 IR from a real FP32 IR, its drift on held-out images, the CLI.

The model is the tame random checkpoint at 128x128 (tests/perf/fixtures.py), so quantizing on
three calibration images takes seconds. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import assert_one_line_error

pytest.importorskip("nncf")


def _ops(xml: Path) -> set[str]:
    import openvino as ov

    return {op.get_type_name() for op in ov.Core().read_model(xml).get_ordered_ops()}


def test_quantize_writes_an_int8_ir_where_omz_puts_it(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    import openvino as ov

    xml = perf_model.root / "public" / perf_model.name / "FP16-INT8" / f"{perf_model.name}.xml"
    assert perf_int8.xml == xml
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert "FakeQuantize" in _ops(xml)
    model = ov.Core().read_model(xml)
    # The contract of every IR holds: BGR 0..255 float32 NCHW in, preprocessing inside.
    assert model.input(0).get_element_type() == ov.Type.f32
    assert str(model.input(0).get_partial_shape()) == "[1,3,128,128]"
    assert model.get_rt_info(["modnet_tools", "precision"]).astype(str) == "FP16-INT8"
    assert model.get_rt_info(["model_info", "model_type"]).astype(str) == "Portrait-matting"
    # INT8 weights make the file far smaller than the FP32 one.
    assert (
        xml.with_suffix(".bin").stat().st_size
        < perf_model.fp32.with_suffix(".bin").stat().st_size / 2
    )


def test_quantize_reports_a_measured_drift_on_held_out_images(perf_int8) -> None:  # type: ignore[no-untyped-def]
    import openvino as ov

    (drift,) = perf_int8.drift
    assert drift.images == 2 and drift.inference_precision == "f32"
    assert 0.0 < drift.mean_abs <= drift.p99_abs <= drift.max_abs < 1.0
    stored = json.loads(
        ov.Core().read_model(perf_int8.xml).get_rt_info(["modnet_tools", "drift"]).astype(str)
    )
    assert stored[0]["mean_abs"] == pytest.approx(drift.mean_abs)
    assert perf_int8.calibration_images == 3 and not perf_int8.skipped


def test_quantize_removes_the_ibnorm_splits(perf_int8) -> None:  # type: ignore[no-untyped-def]
    ops = _ops(perf_int8.xml)
    assert "Slice" not in ops and "MVN" in ops


def test_a_second_run_with_the_same_inputs_is_skipped(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.quantize import quantize_model

    before = perf_int8.xml.stat().st_mtime_ns
    again = quantize_model(
        perf_model.root, perf_model.name, subset_size=3, holdout=holdout_set(1, size=128)
    )
    assert again.skipped
    assert perf_int8.xml.stat().st_mtime_ns == before
    assert again.drift[0].mean_abs > 0  # still measured, never assumed


def test_measure_drift_of_an_ir_against_itself_is_zero(perf_model) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.quantize import measure_drift

    drift = measure_drift(perf_model.fp32, perf_model.fp32, holdout_set(2, size=128))
    assert drift.max_abs == 0.0 and drift.images == 2
    fp16 = measure_drift(perf_model.fp32, perf_model.fp16, holdout_set(2, size=128))
    assert 0.0 < fp16.mean_abs < 0.01


def _write_images(folder: Path, count: int) -> Path:
    from toolkit.perf.calibration import generated_set

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(generated_set(count, seed=5, size=160)):
        cv2.imwrite(str(folder / f"img_{i}.jpg"), image)
    return folder


@pytest.mark.slow  # two CLI runs, one of them a full NNCF quantization: 30-60 s here
def test_quantize_cli_with_a_calibration_folder(run_cli, perf_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    calib = _write_images(tmp_path / "calib", 3)
    (calib / "notes.txt").write_text("not an image")
    (calib / "broken.png").write_bytes(b"\x89PNG broken")  # unreadable: skipped
    out = tmp_path / "out"
    report = tmp_path / "q.json"
    import shutil

    shutil.copytree(
        perf_model.root / "public" / perf_model.name / "FP32",
        out / "public" / perf_model.name / "FP32",
    )
    result = run_cli(
        "quantize",
        "-o",
        out,
        "--calibration",
        calib,
        "--subset-size",
        "3",
        "--ignore",
        "none",
        "--json",
        report,
    )
    assert result.returncode == 0, result.stderr
    xml = out / "public" / perf_model.name / "FP16-INT8" / f"{perf_model.name}.xml"
    assert f"wrote {xml}" in result.stdout
    from toolkit.matting.runtime import cpu_capabilities

    has_bf16 = cpu_capabilities().bf16  # the bf16 drift only where bf16 really runs
    assert "mean |diff|" in result.stdout and ("at bf16" in result.stdout) == has_bf16
    data = json.loads(report.read_text())
    assert data["calibration_images"] == 3 and data["ignore"] == "none"
    assert str(calib) in data["calibration"]
    expected = {"f32", "bf16"} if has_bf16 else {"f32"}
    assert {d["inference_precision"] for d in data["drift"]} == expected
    assert all(math.isfinite(d["mean_abs"]) and d["mean_abs"] > 0 for d in data["drift"])
    assert not list(xml.parent.glob(".*")), "no staging or temporary files left behind"
    again = run_cli(
        "quantize", "-o", out, "--calibration", calib, "--subset-size", "3", "--ignore", "none"
    )
    assert again.returncode == 0 and "up to date" in again.stdout


def test_quantize_without_an_fp32_ir_says_what_to_run(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("quantize", "-o", tmp_path / "empty")
    assert result.returncode == 1
    assert_one_line_error(result, "modnet-tools convert")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a folder"),
    ],
)
def test_quantize_rejects_a_bad_calibration_folder(
    run_cli, perf_model, tmp_path: Path, make, expected
) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("quantize", "-o", perf_model.root, "--calibration", make(tmp_path))
    assert result.returncode == 1
    assert_one_line_error(result, expected)


def test_quantize_calibration_folder_of_unreadable_images(
    run_cli, perf_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    result = run_cli("quantize", "-o", perf_model.root, "--calibration", folder)
    assert result.returncode == 1
    assert_one_line_error(result, "could be read")


@pytest.mark.parametrize(
    "args",
    [["--ignore", "everything"], ["--subset-size", "0"], ["--name", "../x"]],
)
def test_quantize_usage_errors_exit_2(run_cli, args) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("quantize", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_generated_sets_are_deterministic_and_disjoint() -> None:
    from toolkit.perf.calibration import default_calibration_set, holdout_set

    calib, again, held = default_calibration_set(4), default_calibration_set(4), holdout_set(4)
    assert all(np.array_equal(a, b) for a, b in zip(calib, again, strict=True))
    assert all(img.shape == (512, 512, 3) and img.dtype == np.uint8 for img in calib + held)
    assert not any(np.array_equal(a, b) for a in calib for b in held)
    # Images, not flat fields: real spread of values in every one.
    assert all(float(img.std()) > 15 for img in calib + held)
