"""verify_ir: PyTorch vs ONNX Runtime vs IRs on a real photo; a wrong IR is caught."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tests.convert.fixtures import Converted
from toolkit.convert.mo_args import DEFAULT_MO_ARGS, parse_mo_args
from toolkit.convert.pipeline import Recipe, convert_onnx, recipe_mo_args
from toolkit.convert.verify import FP32_TOLERANCE, VerificationError, verify_ir
from toolkit.hashing import file_digest


def _render(report) -> str:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    Console(file=buf, width=140).print(report.table())
    return buf.getvalue()


def test_fp32_ir_and_onnx_pass_and_fp16_drift_is_reported(
    converted_touchy: Converted, photo_bgr: np.ndarray
) -> None:
    report = verify_ir(
        converted_touchy.checkpoint,
        [converted_touchy.fp32, converted_touchy.fp16],
        photo_bgr,
        onnx_path=converted_touchy.onnx,
    )
    assert report.passed and report.failures() == []
    report.raise_for_failures()
    fp32 = report.result("OpenVINO", "FP32")
    fp16 = report.result("OpenVINO", "FP16")
    ort = report.result("ONNX Runtime")
    assert fp32.judged and ort.judged and not fp16.judged
    assert fp32.max_abs is not None and fp32.max_abs < FP32_TOLERANCE
    assert ort.max_abs is not None and ort.max_abs < FP32_TOLERANCE
    assert fp16.max_abs is not None and fp16.max_abs > fp32.max_abs  # drift is real and shown
    assert fp32.mean_abs is not None and fp32.mean_abs <= fp32.max_abs
    assert all(r.seconds is not None and r.seconds > 0 for r in report.results)
    assert report.image_size == (512, 512)
    text = _render(report)
    for needle in ("PyTorch", "ONNX Runtime", "OpenVINO", "FP16", "drift", "reference", "ok"):
        assert needle in text
    assert report.as_dict()["passed"] is True


def test_any_image_size_is_resized_to_the_ir(
    converted_touchy: Converted, photo_bgr: np.ndarray
) -> None:
    wide = np.ascontiguousarray(np.concatenate([photo_bgr, photo_bgr[:, :100]], axis=1))
    report = verify_ir(converted_touchy.checkpoint, converted_touchy.fp32, wide)
    assert report.image_size == (512, 512) and report.passed
    assert [r.backend for r in report.results] == ["PyTorch", "OpenVINO"]


def test_an_ir_with_the_wrong_preprocessing_fails(
    converted_touchy: Converted, photo_bgr: np.ndarray, tmp_path: Path
) -> None:
    # Forgetting the channel reversal: the mistake OMZ users most often make by hand.
    mo = parse_mo_args([a for a in DEFAULT_MO_ARGS if a != "--reverse_input_channels"])
    recipe = Recipe(file_digest(converted_touchy.checkpoint), mo_args=recipe_mo_args(mo))
    wrong = convert_onnx(
        converted_touchy.onnx, tmp_path / "FP32" / "w.xml", precision="FP32", mo=mo, recipe=recipe
    )
    report = verify_ir(converted_touchy.checkpoint, wrong, photo_bgr)
    assert not report.passed
    with pytest.raises(
        VerificationError, match=r"OpenVINO \(FP32\) differs from PyTorch by"
    ) as info:
        report.raise_for_failures()
    assert "\n" not in str(info.value)
    assert "FAIL" in _render(report)


def test_a_checkpoint_that_is_not_the_irs_source_fails(
    converted_touchy: Converted, converted_tame: Converted, photo_bgr: np.ndarray
) -> None:
    report = verify_ir(converted_tame.checkpoint, converted_touchy.fp32, photo_bgr)
    assert not report.passed
    assert report.result("OpenVINO", "FP32").max_abs > 0.01  # type: ignore[operator]


def test_bad_inputs_are_clear_errors(converted_touchy: Converted, tmp_path: Path) -> None:
    from toolkit.errors import ToolkitError

    gray = np.zeros((64, 64), np.uint8)
    with pytest.raises(ToolkitError, match="BGR uint8"):
        verify_ir(converted_touchy.checkpoint, converted_touchy.fp32, gray)
    with pytest.raises(VerificationError, match="cannot read the IR"):
        verify_ir(
            converted_touchy.checkpoint, tmp_path / "missing.xml", np.zeros((64, 64, 3), np.uint8)
        )
