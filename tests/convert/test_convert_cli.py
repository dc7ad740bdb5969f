"""``modnet-tools convert`` end to end: real subprocesses, real checkpoints, real IRs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.convert.fixtures import WEBCAM, Converted
from tests.helpers import CreatesFile, assert_one_line_error
from toolkit.model.random_checkpoint import write_random_checkpoint

PHOTO = "modnet-photographic-portrait-matting"


def _downloaded(root: Path, checkpoint: Path, name: str = WEBCAM) -> Path:
    """Put a checkpoint where `download` leaves it: <root>/public/<name>/<ckpt file>."""
    dest = root / "public" / name / (name.replace("-", "_") + ".ckpt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, dest)
    return dest


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_convert_fp16_after_download_writes_omz_paths_then_reruns_for_free(
    run_cli: RunCli, touchy_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    ckpt = _downloaded(root, touchy_checkpoint)
    proc = run_cli("convert", "--precision", "FP16", "-o", root)
    assert proc.returncode == 0, proc.stderr
    conv = f"public/{WEBCAM}"
    assert _files(root) == {
        str(ckpt.relative_to(root)),
        f"{conv}/modnet_webcam_portrait_matting.onnx",
        f"{conv}/FP16/{WEBCAM}.xml",
        f"{conv}/FP16/{WEBCAM}.bin",
    }
    assert f"========== Converting {WEBCAM} to IR (FP16)" in proc.stdout
    for needle in ("PyTorch", "ONNX Runtime", "OpenVINO", "drift"):
        assert needle in proc.stdout
    xml = root / conv / "FP16" / f"{WEBCAM}.xml"
    stamp = xml.stat().st_mtime_ns
    # What a SIGKILLed convert leaves (its temporaries), next to what it must not touch: a
    # download's resumable partial file and quantize's staging folder.
    model_dir = root / conv
    stale = [
        model_dir / ".modnet_webcam_portrait_matting.onnx.k1ll3d.onnx.part",
        model_dir / "FP16" / f".{WEBCAM}.xml.abc123.xml.part",
        model_dir / "FP16" / f".{WEBCAM}.bin.abc123.bin.part",
        model_dir / "FP16" / ".staging.x7y8z9" / f"{WEBCAM}.bin",
    ]
    kept = [
        model_dir / ".modnet_webcam_portrait_matting.ckpt.0123456789ab.part",
        model_dir / "FP16-INT8" / ".staging.q1w2e3" / f"{WEBCAM}.bin",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    again = run_cli("convert", "--precision", "FP16", "-o", root)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "Verifying" not in again.stdout
    assert xml.stat().st_mtime_ns == stamp
    assert "removed 4 temporary file(s)" in again.stdout, again.stdout
    assert [p for p in stale if p.exists()] == []
    assert not (model_dir / "FP16" / ".staging.x7y8z9").exists()
    assert all(p.read_bytes() == b"half" for p in kept)


def test_dry_run_prints_every_step_and_writes_nothing(
    run_cli: RunCli, touchy_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    _downloaded(root, touchy_checkpoint)
    before = _files(root)
    # OMZ's underscore spellings work too.
    proc = run_cli("convert", "--dry_run", "--download_dir", root, "--output_dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert _files(root) == before and not (tmp_path / "out").exists()
    out = proc.stdout
    assert f"Converting {WEBCAM} to ONNX" in out
    assert "pytorch_to_onnx.py" in out and "--input-names=input" in out
    for prec, compress in (("FP16", "True"), ("FP32", "False")):
        assert f"Converting {WEBCAM} to IR ({prec})" in out
        assert f"--compress_to_fp16={compress}" in out
        assert str(tmp_path / "out" / "public" / WEBCAM / prec / f"{WEBCAM}.xml") in out
    assert "mo --framework=onnx" in out and "--reverse_input_channels" in out
    assert "would write" in out


def test_dry_run_without_a_checkpoint_still_exits_0_and_says_what_to_run(
    run_cli: RunCli, tmp_path: Path
) -> None:
    proc = run_cli("convert", "--dry-run", "-d", tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr
    assert f"modnet-tools download --name {WEBCAM}" in proc.stdout
    assert not (tmp_path / "empty").exists()


def test_a_missing_checkpoint_says_which_command_to_run(run_cli: RunCli, tmp_path: Path) -> None:
    proc = run_cli("convert", "-d", tmp_path / "dl")
    assert_one_line_error(
        proc, f"modnet-tools download --name {WEBCAM} -o {tmp_path / 'dl'}", "--checkpoint"
    )
    proc = run_cli("convert", "--checkpoint", tmp_path / "nope.ckpt", "-o", tmp_path / "out")
    assert_one_line_error(proc, "nope.ckpt does not exist")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def evil_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Each kind of bad checkpoint, built as tests/model/test_checkpoint.py builds them."""
    import torch

    tmp = tmp_path_factory.mktemp("evil")
    legacy = write_random_checkpoint(tmp / "good.legacy", seed=7).read_bytes()
    zipped = write_random_checkpoint(tmp / "good.zip", seed=7, fmt="zip").read_bytes()
    raw = {
        "html": (
            b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>",
            "HTML page",
        ),
        "empty": (b"", "empty (0 bytes)"),
        "truncated_legacy": (legacy[: len(legacy) // 2], "truncated or corrupt"),
        "truncated_zip": (zipped[: len(zipped) // 2], "truncated or corrupt"),
        "random_bytes": (os.urandom(5000), "not a PyTorch checkpoint"),
    }
    cases = {}
    for name, (data, needle) in raw.items():
        (tmp / f"{name}.ckpt").write_bytes(data)
        cases[name] = (tmp / f"{name}.ckpt", needle)
    for fmt in ("legacy", "zip"):
        path = tmp / f"code_{fmt}.ckpt"
        torch.save(
            {"module.x": CreatesFile(tmp / "pwned")},
            path,
            _use_new_zipfile_serialization=fmt == "zip",
        )
        cases[f"code_{fmt}"] = (path, "refused")
    torch.save({"module.head.weight": torch.zeros(3)}, tmp / "keys.ckpt")
    cases["wrong_keys"] = (tmp / "keys.ckpt", "not a MODNet checkpoint")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "html",
        "empty",
        "truncated_legacy",
        "truncated_zip",
        "random_bytes",
        "code_legacy",
        "code_zip",
        "wrong_keys",
    ],
)
def test_a_bad_checkpoint_is_one_line_and_writes_nothing(
    run_cli: RunCli, evil_checkpoints: dict[str, tuple[Path, str]], tmp_path: Path, case: str
) -> None:
    path, needle = evil_checkpoints[case]
    out = tmp_path / "out"
    proc = run_cli("convert", "--checkpoint", path, "-o", out)
    assert_one_line_error(proc, needle, str(path))
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1
    assert not (path.parent / "pwned").exists()
    assert not out.exists() or _files(out) == set()


def test_a_local_checkpoint_converts_under_another_name(
    run_cli: RunCli, converted_tame: Converted, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "convert", "--checkpoint", converted_tame.checkpoint, "--model-name", "my-matting",
        "--precisions", "FP32", "-o", out, "--no-verify",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == {
        "public/my-matting/my_matting.onnx",
        "public/my-matting/FP32/my-matting.xml",
        "public/my-matting/FP32/my-matting.bin",
    }
    assert "Verifying" not in proc.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--input-shape", "1,3,500,500"], 2, "multiples of 32"),
        (["--precision", "FP8"], 1, "Unknown precisions specified: FP8"),
        (["--precisions", "FP16,FP16-INT8"], 2, "FP16-INT8"),
        (["--add-mo-arg=--mean_value=[1]"], 1, "--mean_value"),
        (["--all", "--checkpoint", "x.ckpt"], 2, "one model"),
        (["--model-name", "../escape", "--checkpoint", "x.ckpt"], 2, "unsafe"),
        (["--name", "no-such-model"], 1, 'No matching models: "no-such-model"'),
        (["--exporter", "magic"], 2, "legacy or dynamo"),
    ],
)
def test_usage_mistakes_fail_before_any_work(
    run_cli: RunCli, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    proc = run_cli("convert", "-o", tmp_path / "out", *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_print_all_lists_the_models(run_cli: RunCli) -> None:
    proc = run_cli("convert", "--print-all")
    assert proc.returncode == 0
    assert proc.stdout.split() == [PHOTO, WEBCAM]


@pytest.mark.slow
def test_a_failing_model_does_not_stop_the_others(
    run_cli: RunCli, converted_tame: Converted, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    _downloaded(root, converted_tame.checkpoint)  # the webcam one only
    proc = run_cli("convert", "--all", "-d", root, "--precision", "FP32", "--no-verify")
    assert proc.returncode == 1
    assert (root / "public" / WEBCAM / "FP32" / f"{WEBCAM}.xml").is_file()
    assert f"modnet-tools download --name {PHOTO}" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: FAILED: {PHOTO}"
    assert not (root / "public" / PHOTO / "FP32").exists()


@pytest.mark.slow
def test_a_failed_verification_removes_what_the_run_wrote(
    converted_touchy: Converted, tmp_path: Path
) -> None:
    from toolkit.convert.plan import plan_job, run_job
    from toolkit.convert.verify import VerificationError
    from toolkit.download.config import discover

    class Quiet:
        def heading(self, text: str) -> None: ...
        def info(self, text: str) -> None: ...
        def verify_report(self, report: object) -> None: ...

    root = tmp_path / "models"
    conv = root / "public" / WEBCAM
    conv.mkdir(parents=True)
    shutil.copy(converted_touchy.onnx, conv)  # up to date: this run writes only the IR
    job = plan_job(
        discover()[WEBCAM], download_dir=root, output_dir=root, precisions=("FP32",),
        checkpoint=converted_touchy.checkpoint,
    )  # fmt: skip
    with pytest.raises(VerificationError, match="tolerance 1e-09"):
        run_job(job, Quiet(), tolerance=1e-9)
    assert (
        not job.xml_path("FP32").exists() and not job.xml_path("FP32").with_suffix(".bin").exists()
    )
    assert job.onnx_path.exists()  # not written by this run, so not removed
    result = run_job(job, Quiet())
    assert (
        result.written == [job.xml_path("FP32")]
        and result.report is not None
        and result.report.passed
    )
