"""ONNX -> IR: the model card's contract, OMZ's preprocessing inside, rt_info, reruns, failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from tests.convert.fixtures import WEBCAM, Converted
from toolkit.convert.mo_args import DEFAULT_MO_ARGS, parse_mo_args
from toolkit.convert.pipeline import (
    ConversionError,
    Recipe,
    convert_checkpoint,
    convert_onnx,
    ir_summary,
    read_record,
    recipe_mo_args,
)
from toolkit.convert.verify import normalise
from toolkit.errors import CheckpointError, ConfigError, UsageError
from toolkit.hashing import file_digest
from toolkit.model.checkpoint import load_model

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _run_ir(xml: Path, bgr: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(str(xml), "CPU", F32)
    x = np.ascontiguousarray(bgr.transpose(2, 0, 1)[None].astype(np.float32))
    return np.asarray(compiled([x])[0])


def _pytorch(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_model(checkpoint)(torch.from_numpy(x)).numpy()


def test_ir_inputs_and_outputs_are_as_the_model_card_says(converted_touchy: Converted) -> None:
    for xml in (converted_touchy.fp32, converted_touchy.fp16):
        assert ir_summary(xml) == {
            "input_name": "input",
            "input_shape": "[1,3,512,512]",
            "input_type": "f32",
            "input_layout": "[N,C,H,W]",
            "output_name": "output",
            "output_shape": "[1,1,512,512]",
            "output_type": "f32",
        }


def test_paths_are_omz_converters(converted_touchy: Converted) -> None:
    conv = converted_touchy.root / "public" / WEBCAM
    assert converted_touchy.fp16 == conv / "FP16" / f"{WEBCAM}.xml"
    assert (conv / "FP16" / f"{WEBCAM}.bin").is_file()
    assert (conv / "FP32" / f"{WEBCAM}.bin").is_file()
    assert (conv / "modnet_webcam_portrait_matting.onnx").is_file()
    leftovers = [p for p in conv.rglob(".*")]
    assert leftovers == []


def test_rt_info_tells_a_runtime_what_the_ir_expects(converted_touchy: Converted) -> None:
    model = ov.Core().read_model(str(converted_touchy.fp16))

    def rt(*path: str) -> str:
        return str(model.get_rt_info(list(path)).astype(str))

    # Model API's keys: only what is true for Model API (issue 11 item 17; its own
    # preprocessing keys would make it normalise twice, see tests/convert/test_model_api.py).
    assert rt("model_info", "model_type") == "Portrait-matting"
    assert rt("model_info", "layout") == "input:NCHW"
    for key in ("embedded_processing", "mean_values", "scale_values", "reverse_input_channels"):
        assert not model.has_rt_info(["model_info", key]), key
    assert rt("modnet_tools", "mean_values") == "127.5 127.5 127.5"
    assert rt("modnet_tools", "scale_values") == "127.5"
    assert rt("modnet_tools", "reverse_input_channels") == "True"
    assert rt("modnet_tools", "input_color_order") == "BGR"
    assert rt("modnet_tools", "input_range") == "0..255"
    assert rt("modnet_tools", "precision") == "FP16"
    assert rt("modnet_tools", "source_checkpoint_sha384") == file_digest(
        converted_touchy.checkpoint
    )
    from toolkit import __version__

    assert rt("modnet_tools", "tool_version") == __version__


def test_fp32_ir_at_f32_matches_pytorch_on_a_real_photo(
    converted_touchy: Converted, photo_bgr: np.ndarray
) -> None:
    ref = _pytorch(converted_touchy.checkpoint, normalise(photo_bgr))
    out = _run_ir(converted_touchy.fp32, photo_bgr)
    assert float(ref.std()) > 0.03
    assert float(np.abs(out - ref).max()) < 1e-3


def test_channel_reversal_ir_fed_bgr_equals_pytorch_fed_rgb(
    converted_touchy: Converted, photo_bgr: np.ndarray, tmp_path: Path
) -> None:
    ckpt = converted_touchy.checkpoint
    rgb_ref = _pytorch(ckpt, normalise(photo_bgr))  # normalise() turns BGR into RGB
    as_if_rgb = _pytorch(ckpt, normalise(photo_bgr[:, :, ::-1]))  # the BGR pixels taken as RGB
    out = _run_ir(converted_touchy.fp32, photo_bgr)
    assert float(np.abs(out - rgb_ref).max()) < 1e-3
    # The two orders really give different mattes on this checkpoint, so the check has teeth ...
    assert float(np.abs(as_if_rgb - rgb_ref).max()) > 0.05
    # ... and an IR built without --reverse_input_channels follows the other one.
    mo = parse_mo_args([a for a in DEFAULT_MO_ARGS if a != "--reverse_input_channels"])
    recipe = Recipe(file_digest(ckpt), mo_args=recipe_mo_args(mo))
    plain = convert_onnx(
        converted_touchy.onnx, tmp_path / "plain.xml", precision="FP32", mo=mo, recipe=recipe
    )
    out_plain = _run_ir(plain, photo_bgr)
    assert float(np.abs(out_plain - as_if_rgb).max()) < 1e-3
    rgb_model = ov.Core().read_model(str(plain))
    assert str(rgb_model.get_rt_info(["modnet_tools", "input_color_order"]).astype(str)) == "RGB"


def test_fp16_bin_is_about_half_the_fp32_one(converted_touchy: Converted) -> None:
    fp32 = converted_touchy.fp32.with_suffix(".bin").stat().st_size
    fp16 = converted_touchy.fp16.with_suffix(".bin").stat().st_size
    assert 0.45 < fp16 / fp32 < 0.55


def test_fp16_drift_is_small_on_a_tame_checkpoint(
    converted_tame: Converted, photo_bgr: np.ndarray
) -> None:
    ref = _pytorch(converted_tame.checkpoint, normalise(photo_bgr))
    drift = np.abs(_run_ir(converted_tame.fp16, photo_bgr) - ref)
    exact = np.abs(_run_ir(converted_tame.fp32, photo_bgr) - ref)
    assert float(drift.max()) < 0.02
    assert float(drift.max()) > float(exact.max())  # the FP16 weights really are FP16


def test_a_rerun_with_the_same_inputs_does_no_work(converted_touchy: Converted) -> None:
    xml = converted_touchy.fp32
    before = {
        p: p.stat().st_mtime_ns for p in (xml, xml.with_suffix(".bin"), converted_touchy.onnx)
    }
    convert_checkpoint(converted_touchy.checkpoint, xml, onnx_path=converted_touchy.onnx)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_force_redoes_and_a_new_checkpoint_is_noticed(
    converted_touchy: Converted, converted_tame: Converted, tmp_path: Path
) -> None:
    import shutil

    # Copies of the fixtures' ONNX files carry their recipes, so only the IR step runs here.
    onnx = shutil.copy(converted_touchy.onnx, tmp_path / "m.onnx")
    xml = tmp_path / "FP32" / "m.xml"
    convert_checkpoint(converted_touchy.checkpoint, xml, onnx_path=onnx)
    first = read_record(xml)
    assert first is not None and file_digest(converted_touchy.checkpoint) in first
    stamps = (xml.stat().st_mtime_ns, onnx.stat().st_mtime_ns)
    convert_checkpoint(converted_touchy.checkpoint, xml, onnx_path=onnx, force=True)
    assert xml.stat().st_mtime_ns != stamps[0] and onnx.stat().st_mtime_ns != stamps[1]
    assert read_record(xml) == first
    tame_onnx = shutil.copy(converted_tame.onnx, tmp_path / "t.onnx")
    convert_checkpoint(converted_tame.checkpoint, xml, onnx_path=tame_onnx)
    assert file_digest(converted_tame.checkpoint) in (read_record(xml) or "")


def test_a_changed_precision_or_shape_is_not_up_to_date(touchy_checkpoint: Path) -> None:
    recipe = Recipe(file_digest(touchy_checkpoint))
    assert recipe.ir_record("FP32") != recipe.ir_record("FP16")
    other = Recipe(recipe.checkpoint_sha384, input_shape=None)
    assert other.ir_record("FP32") != recipe.ir_record("FP32")
    assert other.onnx_record() != recipe.onnx_record()


def test_dynamic_ir_runs_at_other_sizes(
    touchy_checkpoint: Path, photo_bgr: np.ndarray, tmp_path: Path
) -> None:
    import cv2

    xml = convert_checkpoint(touchy_checkpoint, tmp_path / "FP32" / "d.xml", input_shape=None)
    summary = ir_summary(xml)
    assert summary["input_shape"] == "[1,3,?,?]"
    assert summary["output_shape"].startswith("[1,1,")
    assert ov.Core().read_model(str(xml)).output(0).get_partial_shape().is_dynamic
    image = cv2.resize(photo_bgr, (480, 320), interpolation=cv2.INTER_AREA)
    ref = _pytorch(touchy_checkpoint, normalise(image))
    out = _run_ir(xml, image)
    assert out.shape == (1, 1, 320, 480)
    assert float(np.abs(out - ref).max()) < 1e-3


def test_a_bad_checkpoint_fails_with_the_loaders_error_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "page.ckpt"
    bad.write_bytes(b"<!DOCTYPE html><html><head><title>Quota exceeded</title></head></html>")
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="HTML page"):
        convert_checkpoint(bad, out / "FP32" / "m.xml", onnx_path=out / "m.onnx")
    assert not out.exists() or not list(out.rglob("*"))


def test_a_failed_conversion_leaves_the_previous_ir_intact(
    converted_touchy: Converted, tmp_path: Path
) -> None:
    xml = tmp_path / "m.xml"
    mo = parse_mo_args(DEFAULT_MO_ARGS)
    recipe = Recipe(file_digest(converted_touchy.checkpoint), mo_args=recipe_mo_args(mo))
    convert_onnx(converted_touchy.onnx, xml, precision="FP32", mo=mo, recipe=recipe)
    good = (xml.read_bytes(), xml.with_suffix(".bin").read_bytes())
    wrong = parse_mo_args([*DEFAULT_MO_ARGS[:-1], "--output=matte"])
    with pytest.raises(ConversionError, match="'matte'"):
        convert_onnx(converted_touchy.onnx, xml, precision="FP32", mo=wrong, recipe=recipe)
    assert (xml.read_bytes(), xml.with_suffix(".bin").read_bytes()) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_a_broken_onnx_is_a_conversion_error(tmp_path: Path) -> None:
    onnx = tmp_path / "broken.onnx"
    onnx.write_bytes(os.urandom(1000))
    mo = parse_mo_args(DEFAULT_MO_ARGS)
    with pytest.raises(ConversionError, match="convert_model failed"):
        convert_onnx(onnx, tmp_path / "x.xml", precision="FP32", mo=mo, recipe=Recipe("0" * 96))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


def test_unknown_mo_flag_and_bad_precision_fail_before_any_work(
    touchy_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="--mean_value"):
        convert_checkpoint(
            touchy_checkpoint, tmp_path / "x.xml", model_optimizer_args=["--mean_value=[1]"]
        )
    with pytest.raises(UsageError, match="FP8"):
        convert_checkpoint(touchy_checkpoint, tmp_path / "x.xml", precision="FP8")
    with pytest.raises(UsageError, match="multiples of 32"):
        convert_checkpoint(touchy_checkpoint, tmp_path / "x.xml", input_shape=(1, 3, 500, 500))
    assert list(tmp_path.iterdir()) == []


def test_per_channel_scale_and_mean_are_applied_in_model_order(
    converted_touchy: Converted, photo_bgr: np.ndarray, tmp_path: Path
) -> None:
    mean, scale = (120.0, 125.0, 130.0), (60.0, 65.0, 70.0)
    args = [
        "--reverse_input_channels",
        "--mean_values=input[120, 125, 130]",
        "--scale_values=input[60,65,70]",
    ]
    mo = parse_mo_args(args)
    recipe = Recipe(file_digest(converted_touchy.checkpoint), mo_args=recipe_mo_args(mo))
    xml = convert_onnx(
        converted_touchy.onnx, tmp_path / "c.xml", precision="FP32", mo=mo, recipe=recipe
    )
    rgb = photo_bgr[:, :, ::-1].astype(np.float32)
    x = ((rgb - np.array(mean, np.float32)) / np.array(scale, np.float32)).transpose(2, 0, 1)[None]
    ref = _pytorch(converted_touchy.checkpoint, np.ascontiguousarray(x))
    assert float(np.abs(_run_ir(xml, photo_bgr) - ref).max()) < 1e-3
