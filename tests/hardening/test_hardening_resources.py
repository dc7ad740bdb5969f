"""Resource faults: a full disk, read-only outputs, inputs the process may not read.

What the product must do, decided here and checked for ``download``, ``convert`` and
``infer``:

* A full disk (``RLIMIT_FSIZE``: writes past the limit fail with ``EFBIG``, "File too large",
  the same path as ``ENOSPC``) is one line naming the file and the reason, exit 1. It is not
  retried as if it were the network, nothing incomplete appears at a final path, and the
  download's partial file stays hidden so that a rerun with space continues it.
* A read-only output folder, or a file where the output folder should be: one line, exit 1
  (or 2 for a usage mistake caught up front), nothing written.
* An input the process may not read: that input fails alone (``infer`` goes on with the
  others); a checkpoint or model config that cannot be read is one line, exit 1 or 2.

The tests run as root in CI, where mode bits do not apply; the ``unprivileged`` fixture drops
the two capabilities that let root ignore them (see ``tests/hardening/fixtures.py``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.download.fixtures_http import Fault, FileServer, ModelSpec
from tests.hardening.fixtures import (
    PreExec,
    assert_clean_failure,
    avi_bytes,
    error_lines,
    leftovers,
    limit_file_size,
    run_tool,
    visible_files,
)
from tests.matting.fixtures import InferModel

WEBCAM = "modnet-webcam-portrait-matting"


def _download(
    model: ModelSpec, out: Path, cwd: Path, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return run_tool(
        "download", "--name", model.name, "--models-dir", model.models_dir, "-o", out, cwd=cwd,
        **kw,
    )  # fmt: skip


def _assert_whole_images(folder: Path) -> None:
    """Every visible file under ``folder`` is a complete image (OpenCV decodes it fully)."""
    for path in visible_files(folder):
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path


# --- a full disk ---------------------------------------------------------------------------------


def test_download_on_a_full_disk_is_not_retried_and_a_rerun_resumes(
    http_server: FileServer, served_model, tmp_path: Path
) -> None:
    model: ModelSpec = served_model(size=300_000)
    out = tmp_path / "out"
    full = _download(model, out, tmp_path, preexec_fn=limit_file_size(100_000))
    assert_clean_failure(full, "cannot write", "File too large")
    assert "connection" not in full.stderr
    assert not model.path_in(out).exists()
    gets = http_server.requests_for(f"/files/{model.name}.ckpt")
    assert len(gets) == 1, "a full disk is not the network: no retries"
    [partial] = leftovers(out)
    kept = partial.stat().st_size
    assert 0 < kept <= 100_000

    rerun = _download(model, out, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert model.path_in(out).read_bytes() == model.data
    assert leftovers(out) == []
    assert http_server.requests_for(f"/files/{model.name}.ckpt")[-1].range_start == kept


def test_convert_on_a_full_disk_leaves_nothing(tame_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_tool(
        "convert", "--checkpoint", tame_checkpoint, "-o", out, "--no-verify",
        cwd=tmp_path, preexec_fn=limit_file_size(5_000_000),
    )  # fmt: skip
    assert_clean_failure(proc, "File too large")
    assert visible_files(out) == [] and leftovers(out) == []


@pytest.mark.slow
def test_convert_failing_at_the_ir_step_keeps_what_was_already_good(
    tame_checkpoint: Path, tmp_path: Path
) -> None:
    """FP16 and the ONNX made first; FP32 (a 26 MB .bin) then hits a 20 MB limit."""
    out = tmp_path / "out"
    first = run_tool(
        "convert", "--checkpoint", tame_checkpoint, "-o", out, "--precision", "FP16",
        "--no-verify", cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = {p: p.stat().st_mtime_ns for p in visible_files(out)}
    full = run_tool(
        "convert", "--checkpoint", tame_checkpoint, "-o", out, "--precision", "FP32",
        "--no-verify", cwd=tmp_path, preexec_fn=limit_file_size(20_000_000),
    )  # fmt: skip
    assert_clean_failure(full, "save_model failed", "disk full")
    assert {p: p.stat().st_mtime_ns for p in visible_files(out)} == before
    assert not (out / "public" / WEBCAM / "FP32" / f"{WEBCAM}.xml").exists()
    assert leftovers(out) == []
    again = run_tool(
        "convert", "--checkpoint", tame_checkpoint, "-o", out, "--precision", "FP16",
        "--no-verify", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout


@pytest.mark.parametrize("limit", [30_000, 200_000], ids=["nothing fits", "alpha fits"])
def test_infer_on_a_full_disk_fails_each_image_cleanly(
    limit: int, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """30 kB: no output fits. 200 kB: the 8-bit matte (~130 kB) fits, the RGBA (~600 kB) does
    not: the image is reported failed; the files that were written are whole."""
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(sample_photo.read_bytes())
    out = tmp_path / "out"
    proc = run_tool(
        "infer", "a.png", "b.png", "-o", out, "--model", infer_model.xml,
        cwd=tmp_path, preexec_fn=limit_file_size(limit),
    )  # fmt: skip
    assert_clean_failure(proc, "2 of 2 inputs failed")
    for name in ("a.png", "b.png"):
        assert f"error: {name}: cannot write results: File too large" in proc.stderr
    assert leftovers(out) == []
    _assert_whole_images(out)
    assert not list(out.glob("*_rgba.png"))


def test_infer_video_on_a_full_disk_publishes_no_truncated_video(
    infer_model: InferModel, tmp_path: Path
) -> None:
    """OpenCV's writer ignores write errors; the product must notice the short file."""
    (tmp_path / "clip.avi").write_bytes(avi_bytes(frames=6))
    out = tmp_path / "out"
    proc = run_tool(
        "infer", "clip.avi", "-o", out, "--model", infer_model.xml,
        cwd=tmp_path, preexec_fn=limit_file_size(10_000),
    )  # fmt: skip
    assert_clean_failure(proc, "clip.avi", "cannot write results")
    assert visible_files(out) == [] and leftovers(out) == []


# --- read-only outputs and outputs that are files ----------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_download_into_a_read_only_folder(
    http_server: FileServer, served_model, read_only_dir: Path, unprivileged: PreExec | None,
    tmp_path: Path,
) -> None:  # fmt: skip
    model: ModelSpec = served_model()
    proc = _download(model, read_only_dir, tmp_path, preexec_fn=unprivileged)
    assert_clean_failure(proc, "cannot write", "Permission denied")
    assert list(read_only_dir.iterdir()) == []


def test_convert_into_a_read_only_folder(
    tame_checkpoint: Path, read_only_dir: Path, unprivileged: PreExec | None, tmp_path: Path
) -> None:
    proc = run_tool(
        "convert", "--checkpoint", tame_checkpoint, "-o", read_only_dir, "--no-verify",
        cwd=tmp_path, preexec_fn=unprivileged,
    )  # fmt: skip
    assert_clean_failure(proc, str(read_only_dir), "Permission denied")
    assert list(read_only_dir.iterdir()) == []


def test_infer_into_a_read_only_folder(
    infer_model: InferModel, sample_photo: Path, read_only_dir: Path,
    unprivileged: PreExec | None, tmp_path: Path,
) -> None:  # fmt: skip
    proc = run_tool(
        "infer", sample_photo, "-o", read_only_dir / "sub", "--model", infer_model.xml,
        cwd=tmp_path, preexec_fn=unprivileged,
    )  # fmt: skip
    assert_clean_failure(proc, "cannot write results", "Permission denied")
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("command", ["download", "convert", "infer"])
def test_an_output_folder_that_is_a_file(
    command: str, http_server: FileServer, served_model, tame_checkpoint: Path,
    infer_model: InferModel, sample_photo: Path, tmp_path: Path,
) -> None:  # fmt: skip
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    if command == "download":
        model: ModelSpec = served_model()
        args: list[object] = ["download", "--name", model.name, "--models-dir", model.models_dir]
    elif command == "convert":
        args = ["convert", "--checkpoint", tame_checkpoint, "--no-verify"]
    else:
        args = ["infer", sample_photo, "--model", infer_model.xml]
    proc = run_tool(*args, "-o", blocker, cwd=tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    assert_clean_failure(proc, "blocker", code=proc.returncode)
    assert blocker.read_text() == "I am a file"
    assert leftovers(tmp_path) == []


# --- inputs the process may not read --------------------------------------------------------------


def test_infer_skips_unreadable_inputs_and_does_the_rest(
    infer_model: InferModel, sample_photo: Path, unprivileged: PreExec | None, tmp_path: Path
) -> None:
    for name in ("a.png", "secret.png", "z.png"):
        (tmp_path / name).write_bytes(sample_photo.read_bytes())
    (tmp_path / "secret.png").chmod(0o000)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "inside.png").write_bytes(sample_photo.read_bytes())
    locked.chmod(0o000)
    out = tmp_path / "out"
    proc = run_tool(
        "infer", "a.png", "secret.png", "locked", "z.png", "-o", out, "--model", infer_model.xml,
        cwd=tmp_path, preexec_fn=unprivileged,
    )  # fmt: skip
    locked.chmod(0o755)
    assert_clean_failure(proc, "2 of 4 inputs failed")
    errors = error_lines(proc.stderr)
    assert "error: secret.png: permission denied" in errors
    assert "error: locked: Permission denied" in errors
    assert sorted(p.name for p in out.iterdir()) == [
        "a_alpha.png", "a_rgba.png", "z_alpha.png", "z_rgba.png",
    ]  # fmt: skip


@pytest.mark.parametrize("command", ["check-checkpoint", "convert"])
def test_an_unreadable_checkpoint_is_a_clear_error(
    command: str, tame_checkpoint: Path, unprivileged: PreExec | None, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.ckpt"
    secret.write_bytes(tame_checkpoint.read_bytes())
    secret.chmod(0o000)
    args = [secret] if command == "check-checkpoint" else ["--checkpoint", secret, "-o", "out"]
    proc = run_tool(command, *args, cwd=tmp_path, preexec_fn=unprivileged)
    # Typer checks readability while parsing: a one-line usage error (exit 2) naming the file.
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "not readable" in proc.stderr
    assert "secret.ckpt" in proc.stderr
    assert visible_files(tmp_path / "out") == []


def test_an_unreadable_model_config_is_a_clear_error(
    served_model, unprivileged: PreExec | None, tmp_path: Path
) -> None:
    model: ModelSpec = served_model()
    config = model.models_dir / f"{model.name}.yml"
    config.chmod(0o000)
    proc = _download(model, tmp_path / "out", tmp_path, preexec_fn=unprivileged)
    assert_clean_failure(proc, str(config), "cannot read", "Permission denied")
    model.models_dir.chmod(0o000)
    proc = _download(model, tmp_path / "out", tmp_path, preexec_fn=unprivileged)
    model.models_dir.chmod(0o755)
    # An unreadable --models-dir is caught while parsing: a one-line usage error (exit 2).
    assert proc.returncode == 2 and "not readable" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert visible_files(tmp_path / "out") == []


def test_a_download_source_that_keeps_failing_is_not_a_disk_error(
    http_server: FileServer, served_model, tmp_path: Path
) -> None:
    """The other side of the disk-error rule: network trouble is still retried."""
    model: ModelSpec = served_model(Fault("drop", times=-1, after=50_000))
    proc = _download(model, tmp_path / "out", tmp_path, env={"MODNET_TOOLS_RETRY_DELAY": "0.01"})
    assert_clean_failure(proc, "after 3 attempts")
    assert len(http_server.requests_for(f"/files/{model.name}.ckpt")) == 3
