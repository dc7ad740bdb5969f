"""infer --fast: the measured fast mode through the real infer command and the Python API."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import assert_one_line_error

pytest.importorskip("nncf")


def test_fast_choice_picks_the_int8_ir_and_its_precision(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.fastpath import FAST_MODE, fast_choice

    xml, hint = fast_choice(None, perf_model.name, None, "f32", perf_model.root)
    assert xml == perf_int8.xml and hint == FAST_MODE.inference_precision
    given, _ = fast_choice(perf_model.fp32, perf_model.name, None, "f32", perf_model.root)
    assert given == perf_model.fp32  # --model still wins


def test_fast_choice_refuses_contradicting_options(perf_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.errors import UsageError
    from toolkit.perf.fastpath import FastModeUnavailable, fast_choice

    with pytest.raises(UsageError, match="--precision"):
        fast_choice(None, perf_model.name, "FP32", "f32", perf_model.root)
    with pytest.raises(UsageError, match="--inference-precision"):
        fast_choice(None, perf_model.name, None, "bf16", perf_model.root)
    with pytest.raises(FastModeUnavailable, match="modnet-tools quantize"):
        fast_choice(None, perf_model.name, None, "f32", tmp_path)


def test_fast_session_mattes_close_to_the_fp32_ir(perf_model, perf_int8) -> None:  # type: ignore[no-untyped-def]
    from toolkit.matting.session import MattingSession
    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.fastpath import FAST_MODE, fast_session

    fast = fast_session(perf_int8.xml)
    assert fast.model.precision == FAST_MODE.inference_precision
    exact = MattingSession.from_xml(perf_model.fp32)
    image = holdout_set(1, size=200)[0]
    a, b = fast.matte(image), exact.matte(image)
    assert a.shape == b.shape == (200, 200)
    diff = np.abs(a - b)
    assert 0 < float(diff.mean()) < 0.05  # INT8 differs, but it is the same matte


def test_u8_nhwc_input_gives_the_same_matte(perf_model) -> None:  # type: ignore[no-untyped-def]
    import openvino as ov

    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.fastpath import u8_nhwc_input

    core = ov.Core()
    image = holdout_set(1, size=128)[0]
    plain = core.compile_model(perf_model.fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    u8 = core.compile_model(
        u8_nhwc_input(core.read_model(perf_model.fp32)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    a = plain(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))[0]
    b = u8(np.ascontiguousarray(image[None]))[0]
    assert np.abs(a - b).max() < 1e-5


def test_infer_fast_writes_the_same_outputs_as_infer(
    run_cli, perf_model, perf_int8, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.calibration import holdout_set

    photo = tmp_path / "person.png"
    cv2.imwrite(str(photo), holdout_set(1, size=256)[0])
    fast = run_cli(
        "infer", photo, "--fast", "--model-root", perf_model.root, "-o", tmp_path / "fast"
    )
    assert fast.returncode == 0, fast.stderr
    exact = run_cli("infer", photo, "--model-root", perf_model.root, "-o", tmp_path / "exact")
    assert exact.returncode == 0, exact.stderr
    a = cv2.imread(str(tmp_path / "fast" / "person_alpha.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(tmp_path / "exact" / "person_alpha.png"), cv2.IMREAD_GRAYSCALE)
    assert a.shape == b.shape == (256, 256)
    assert (tmp_path / "fast" / "person_rgba.png").is_file()
    assert 0 < np.abs(a.astype(int) - b.astype(int)).mean() < 0.05 * 255


def test_infer_fast_without_the_int8_ir_says_to_quantize(
    run_cli, perf_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    shutil.copytree(perf_model.fp32.parent, root / "public" / perf_model.name / "FP32")
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = run_cli("infer", photo, "--fast", "--model-root", root, "-o", tmp_path / "out")
    assert_one_line_error(result, "modnet-tools quantize")


def test_infer_fast_with_precision_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = run_cli("infer", photo, "--fast", "--precision", "FP32", "-o", tmp_path / "out")
    assert result.returncode == 2 and "--precision" in result.stderr
    assert "Traceback" not in result.stderr


def test_infer_help_states_the_fast_modes_accuracy_cost(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("infer", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--fast" in text and "mean" in text and "max" in text
