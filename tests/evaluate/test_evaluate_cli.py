"""``modnet-tools evaluate`` end to end: real OpenVINO IRs with known outputs, real subprocesses.

The IRs and the dataset are built in ``tests/evaluate/fixtures.py``, which also explains the
hand-computed numbers asserted here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import RunCli
from tests.convert.fixtures import Converted
from tests.evaluate.fixtures import build_const_ir
from tests.helpers import assert_one_line_error
from toolkit.matting.runtime import CAPS_ENV, cpu_capabilities
from toolkit.paths import ir_xml

NAME = "modnet-webcam-portrait-matting"


@pytest.fixture
def clean_dataset(matting_dataset: Path) -> Path:
    """Only the two good pairs (a, b): nothing to skip."""
    for stem in "cdef":
        for p in matting_dataset.glob(f"{stem}.*"):
            p.unlink()
    return matting_dataset


def test_constant_ir_prints_and_writes_hand_computed_figures(
    run_cli: RunCli, matting_dataset: Path, const_ir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report" / "metrics.json"
    proc = run_cli("evaluate", "--images", matting_dataset, "--model", const_ir, "--json", out)
    # The figures are printed even though pairs were skipped; the skips make the exit code 1.
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "MAD     mean 77.500000  std 76.500000" in proc.stdout
    assert "MSE     mean 15198.343750  std 15197.343750" in proc.stdout
    assert "2 evaluated of 5, 3 skipped" in proc.stdout
    for line in (
        "skipped c: missing matte",
        "skipped d: unreadable image",
        "skipped e: unreadable matte",
    ):
        assert line in proc.stderr
    doc = json.loads(out.read_text())
    assert doc["images"] == 2
    assert doc["MAD"] == {"mean": 77.5, "std": 76.5}
    assert doc["MSE"] == {"mean": 15198.34375, "std": 15197.34375}
    assert doc["skipped"] == 3 and doc["considered"] == 5
    assert doc["skipped_by_reason"] == {
        "missing_matte": 1,
        "unreadable_image": 1,
        "unreadable_matte": 1,
        "too_large": 0,
    }
    per_image = doc["variants"][0]["per_image"]
    assert per_image == [
        {"name": "a", "MAD": 1.0, "MSE": 1.0},  # trunc(0.999*255) = 254 vs 255
        {"name": "b", "MAD": 154.0, "MSE": 30395.6875},
    ]
    assert doc["variants"][0]["inference_precision"] == "f32"
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp files left


def test_input_dependent_ir_pins_truncation_and_feed(
    run_cli: RunCli, clean_dataset: Path, blue_ir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.json"
    proc = run_cli("evaluate", "--images", clean_dataset, "--model", blue_ir, "--json", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    # a: grey 128 -> 128/256 = 0.5 -> 127.5 -> 127 (rounding would say 128); gt 255.
    # b: grey 64 -> 63.75 -> 63; gt columns 0/100/200 over 171/170/171 columns.
    assert doc["variants"][0]["per_image"] == [
        {"name": "a", "MAD": 128.0, "MSE": 16384.0},
        {"name": "b", "MAD": 40490 / 512, "MSE": 4120928 / 512},
    ]
    assert doc["MAD"]["mean"] == (128 + 40490 / 512) / 2
    assert doc["skipped"] == 0


def test_channel_order_is_bgr_as_opencv_reads_it(
    run_cli: RunCli, tmp_path: Path, blue_ir: Path
) -> None:
    folder = tmp_path / "colour"
    folder.mkdir()
    bgr = np.zeros((120, 90, 3), np.uint8)
    bgr[..., 0] = 250  # blue
    bgr[..., 2] = 10  # red
    assert cv2.imwrite(str(folder / "x.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert cv2.imwrite(str(folder / "x.png"), np.full((120, 90), 255, np.uint8))
    out = tmp_path / "m.json"
    proc = run_cli("evaluate", "--images", folder, "--model", blue_ir, "--json", out)
    assert proc.returncode == 0, proc.stderr
    blue = int(cv2.imread(str(folder / "x.jpg"))[..., 0].mean().round())
    assert blue >= 245
    # The IR outputs channel 0 / 256: BGR order gives about 250 -> MAD about 6; RGB would be ~246.
    assert doc_mad(out) == pytest.approx(255 - int(blue * 255 / 256), abs=1.0)


def doc_mad(path: Path) -> float:
    return float(json.loads(path.read_text())["MAD"]["mean"])


def test_compare_two_irs_reports_drift_vs_the_first(
    run_cli: RunCli, clean_dataset: Path, const_ir: Path, blue_ir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp.json"
    proc = run_cli(
        "evaluate",
        "--images",
        clean_dataset,
        "--model",
        const_ir,
        "--model",
        blue_ir,
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    assert "const.xml @ f32" in proc.stdout and "blue.xml @ f32" in proc.stdout
    assert "159.000000" in proc.stdout  # mean |127-254|, |63-254| over the two images
    doc = json.loads(out.read_text())
    const, blue = doc["variants"]
    assert const["MAD"] == {"mean": 77.5, "std": 76.5}
    assert blue["drift_vs_first"]["matte_mean_abs"] == 159.0
    assert blue["drift_vs_first"]["matte_max_abs"] == 191
    assert blue["drift_vs_first"]["MAD_mean"] == pytest.approx((128 + 40490 / 512) / 2 - 77.5)
    assert const["drift_vs_first"]["matte_max_abs"] == 0


@pytest.mark.parametrize("caps", [None, "avx2"], ids=["this-cpu", "avx2-only"])
def test_compare_finds_converted_precisions_under_output_dir(
    run_cli: RunCli,
    clean_dataset: Path,
    const_ir: Path,
    blue_ir: Path,
    tmp_path: Path,
    caps: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--compare`` adds the bf16 row only where the CPU has bf16 (read from OpenVINO, or
    the override that stands for an AVX2-only CPU), and says so where it does not."""
    env = {CAPS_ENV: caps} if caps else {}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    has_bf16 = cpu_capabilities().bf16
    root = tmp_path / "home"
    for precision, src in (("FP32", const_ir), ("FP16", blue_ir)):
        dest = ir_xml(root, NAME, precision)
        dest.parent.mkdir(parents=True)
        shutil.copy(src, dest)
        shutil.copy(src.with_suffix(".bin"), dest.with_suffix(".bin"))
    out = tmp_path / "cmp.json"
    proc = run_cli(
        "evaluate", "--images", clean_dataset, "-o", root, "--compare", "--json", out, env=env
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    expected = ["FP32 @ f32", "FP16 @ f32"] + ["FP32 @ bf16"] * has_bf16
    assert [v["model"] for v in doc["variants"]] == expected
    assert [v["inference_precision"] for v in doc["variants"]] == ["f32", "f32", "bf16"][
        : len(expected)
    ]
    assert ("no bf16" in proc.stderr) == (not has_bf16)
    if caps == "avx2":
        assert not has_bf16
    assert doc["MAD"] == {"mean": 77.5, "std": 76.5}  # FP32 (the constant IR) is the reference
    assert doc["variants"][1]["drift_vs_first"]["matte_mean_abs"] == 159.0
    # The same root through $MODNET_TOOLS_HOME and --precision picks one IR.
    proc = run_cli(
        "evaluate",
        "--images",
        clean_dataset,
        "--precision",
        "FP16",
        env={"MODNET_TOOLS_HOME": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"FP16/{NAME}.xml (CPU, f32)" in proc.stdout
    assert "MAD     mean 103.541016" in proc.stdout  # (128 + 79.08203125) / 2


def test_limit_and_separate_matte_folder(
    run_cli: RunCli, clean_dataset: Path, const_ir: Path, tmp_path: Path
) -> None:
    mattes = tmp_path / "mattes"
    mattes.mkdir()
    for p in clean_dataset.glob("*.png"):
        p.rename(mattes / p.name)
    out = tmp_path / "m.json"
    proc = run_cli(
        "evaluate",
        "--images",
        clean_dataset,
        "--mattes",
        mattes,
        "--model",
        const_ir,
        "--limit",
        "1",
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["images"], doc["considered"]) == (1, 1)
    assert doc["MAD"] == {"mean": 1.0, "std": 0.0}


def test_missing_converted_ir_is_one_line_with_a_hint(
    run_cli: RunCli, clean_dataset: Path, tmp_path: Path
) -> None:
    proc = run_cli("evaluate", "--images", clean_dataset, "-o", tmp_path / "empty")
    assert_one_line_error(proc, "no FP32 IR", "modnet-tools convert")
    proc = run_cli("evaluate", "--images", clean_dataset, "-o", tmp_path / "empty", "--compare")
    assert_one_line_error(proc, "no converted IR")


def test_bad_inputs_are_one_line_errors(
    run_cli: RunCli, clean_dataset: Path, const_ir: Path, tmp_path: Path
) -> None:
    proc = run_cli("evaluate", "--images", tmp_path / "nowhere", "--model", const_ir)
    assert_one_line_error(proc, "does not exist")
    proc = run_cli("evaluate", "--images", clean_dataset, "--model", tmp_path / "none.xml")
    assert_one_line_error(proc, "none.xml", "no such IR file")
    (tmp_path / "junk.xml").write_text("<net>")
    (tmp_path / "junk.bin").write_bytes(b"")
    proc = run_cli("evaluate", "--images", clean_dataset, "--model", tmp_path / "junk.xml")
    assert_one_line_error(proc, "junk.xml", "cannot read")
    (tmp_path / "taken").mkdir()
    proc = run_cli(
        "evaluate", "--images", clean_dataset, "--model", const_ir, "--json", tmp_path / "taken"
    )
    # a folder at the --json path is refused up front as bad usage (exit 2), before any work
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "taken" in proc.stderr and "is a folder" in proc.stderr
    assert list((tmp_path / "taken").iterdir()) == [] and len(list(tmp_path.glob(".*part"))) == 0


def test_ir_with_another_input_size_is_refused(
    run_cli: RunCli, clean_dataset: Path, tmp_path: Path
) -> None:
    import openvino as ov
    import openvino.opset13 as ops

    inp = ops.parameter([1, 3, 256, 256], np.float32, name="input")
    model = ov.Model([ops.multiply(inp, np.float32(0.5))], [inp], "small")
    ov.save_model(model, str(tmp_path / "small.xml"), compress_to_fp16=False)
    proc = run_cli("evaluate", "--images", clean_dataset, "--model", tmp_path / "small.xml")
    assert_one_line_error(proc, "small.xml", "not a matting IR", "N x 1 x H x W")


def test_nothing_evaluable_fails_and_writes_no_json(
    run_cli: RunCli, tmp_path: Path, const_ir: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"garbage")
    out = tmp_path / "m.json"
    proc = run_cli("evaluate", "--images", folder, "--model", const_ir, "--json", out)
    assert_one_line_error(proc, "none of the 1 image")
    assert not out.exists()


def test_usage_errors_exit_2(run_cli: RunCli, clean_dataset: Path, const_ir: Path) -> None:
    proc = run_cli(
        "evaluate", "--images", clean_dataset, "--model", const_ir, "--precision", "FP16"
    )
    assert proc.returncode == 2 and "not both" in proc.stderr
    proc = run_cli(
        "evaluate", "--images", clean_dataset, "--model", const_ir, "--inference-precision", "i8"
    )
    assert proc.returncode == 2 and "f32, bf16" in proc.stderr
    proc = run_cli("evaluate", "--images", clean_dataset, "--model", const_ir, "--limit", "0")
    assert proc.returncode == 2
    proc = run_cli("evaluate", "--images", clean_dataset, "--precision", "FP8")
    assert proc.returncode == 2 and "unknown precision 'FP8'" in proc.stderr
    proc = run_cli("evaluate", "--images", clean_dataset, "--name", "../x")
    assert proc.returncode == 2 and "not a path" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bf16_inference_runs_and_is_labelled(
    run_cli: RunCli, clean_dataset: Path, tmp_path: Path
) -> None:
    # 0.75 is exact in bf16, so the figures must not move: pred 191 everywhere.
    xml = build_const_ir(tmp_path / "c075.xml", 0.75)
    out = tmp_path / "m.json"
    proc = run_cli(
        "evaluate",
        "--images",
        clean_dataset,
        "--model",
        xml,
        "--inference-precision",
        "f32",
        "--inference-precision",
        "bf16",
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    if cpu_capabilities().bf16:
        assert [v["model"] for v in doc["variants"]] == [f"{xml} @ f32", f"{xml} @ bf16"]
        assert doc["variants"][1]["MAD"] == doc["variants"][0]["MAD"]
    else:  # bf16 runs as f32 here: one row, and one line saying so
        assert [v["model"] for v in doc["variants"]] == [f"{xml} @ f32"]
        assert "no bf16" in proc.stderr and "running f32 instead" in proc.stderr
    assert doc["variants"][0]["per_image"][0] == {"name": "a", "MAD": 64.0, "MSE": 4096.0}


def test_bf16_on_a_cpu_without_it_says_it_runs_f32(
    run_cli: RunCli, clean_dataset: Path, const_ir: Path
) -> None:
    """An AVX2-only CPU (the override stands for one): asking for bf16 gives one note line
    and f32 figures labelled f32."""

    proc = run_cli(
        "evaluate",
        "--images",
        clean_dataset,
        "--model",
        const_ir,
        "--inference-precision",
        "bf16",
        env={CAPS_ENV: "avx2"},
    )
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "running f32 instead" in line]
    assert len(notes) == 1 and "no bf16" in notes[0]
    assert "(CPU, f32)" in proc.stdout and "bf16" not in proc.stdout


def _photo_dataset(folder: Path, sample_photo: Path) -> Path:
    """Two photos (the astronaut, and it mirrored and cropped) with disc mattes of other sizes."""
    folder.mkdir()
    photo = cv2.imread(str(sample_photo))
    assert cv2.imwrite(str(folder / "p1.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert cv2.imwrite(
        str(folder / "p2.jpg"), photo[40:, ::-1][:, 60:], [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    for stem, size in (("p1", 300), ("p2", 700)):
        yy, xx = np.mgrid[:size, :size]
        disc = np.clip(255 - np.hypot(yy - size / 2, xx - size / 2) * 600 / size, 0, 255)
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 3] = disc.astype(np.uint8)
        assert cv2.imwrite(str(folder / f"{stem}.png"), rgba)
    return folder


def test_real_modnet_ir_matches_pytorch_semantics(
    run_cli: RunCli, tmp_path: Path, converted_tame: Converted, sample_photo: Path
) -> None:
    """The CLI's figures on a converted MODNet equal those computed from PyTorch directly.

    The reference here bypasses OpenVINO altogether: PyTorch MODNet on the RGB image
    normalised to [-1, 1], then OMZ's post-processing and Pillow's nearest for the ground
    truth. Equality (to the few pixels where f32 rounding flips a truncation) shows that the
    command feeds the IR BGR 0..255 stretched to 512x512, as OMZ's accuracy check does.
    ``--compare`` finds the FP32 and FP16 IRs under the output dir and adds FP32 at bf16.
    """
    import torch
    from PIL import Image

    from toolkit.model.checkpoint import load_model

    data = _photo_dataset(tmp_path / "photos", sample_photo)
    out = tmp_path / "m.json"
    proc = run_cli(
        "evaluate", "--images", data, "-o", converted_tame.root, "--compare", "--json", out
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    has_bf16 = cpu_capabilities().bf16  # what OpenVINO says this CPU runs natively
    expected = ["FP32 @ f32", "FP16 @ f32"] + ["FP32 @ bf16"] * has_bf16
    assert [v["model"] for v in doc["variants"]] == expected
    assert doc["variants"][0]["xml"] == str(converted_tame.fp32)

    net = load_model(converted_tame.checkpoint).eval()
    expected = []
    for stem in ("p1", "p2"):
        bgr = cv2.resize(
            cv2.imread(str(data / f"{stem}.jpg")), (512, 512), interpolation=cv2.INTER_LINEAR
        )
        rgb = torch.from_numpy(bgr[..., ::-1].astype(np.float32).copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            alpha = net((rgb - 127.5) / 127.5)[0, 0].numpy()
        pred = np.trunc(alpha * np.float32(255)).astype(np.uint8)
        with Image.open(data / f"{stem}.png") as im:
            gt = np.array(im.getchannel("A").resize((512, 512), resample=0), np.float64)
        assert alpha.std() > 0.02, "the random network should give a varied matte"
        expected.append(np.abs(gt - pred).mean())
    fp32, fp16 = doc["variants"][:2]
    # Feeding RGB instead of BGR moves these by ~0.16, rounding instead of truncating by ~0.36.
    assert [item["MAD"] for item in fp32["per_image"]] == pytest.approx(expected, abs=0.02)
    assert doc["MAD"]["mean"] == pytest.approx(np.mean(expected), abs=0.02)
    # Reduced precisions run, are labelled, and move the tame network's matte only a little.
    assert 0 <= fp16["drift_vs_first"]["matte_mean_abs"] < 1
    if has_bf16:  # bf16 really runs: the matte moves, a little
        bf16 = doc["variants"][2]
        assert 0 < bf16["drift_vs_first"]["matte_mean_abs"] < 5
        assert bf16["inference_precision"] == "bf16"
    else:
        assert "no bf16" in proc.stderr


def test_evaluate_runs_without_torch(clean_dataset: Path, const_ir: Path, tmp_path: Path) -> None:
    """An inference-only install (no torch) can evaluate: torch is made unimportable here."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from toolkit.cli import main\n"
        f"main(['evaluate', '--images', {str(clean_dataset)!r}, '--model', {str(const_ir)!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MAD     mean 77.500000  std 76.500000" in proc.stdout
