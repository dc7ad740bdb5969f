"""Interruptions: Ctrl-C (SIGINT), SIGTERM and SIGKILL while ``download``, ``convert`` and
``infer`` are demonstrably mid-work; afterwards nothing incomplete is at a final path, and a
rerun completes.

How "mid-work" is made certain rather than hoped for:

* download: the test server stalls each body after a known number of bytes; the signal is
  sent once the hidden partial file holds exactly those bytes;
* convert: the signal is sent at a chosen step, seen on disk (the ONNX's temporary file
  exists; the IR's staging folder exists) or in its output (the verification heading);
* infer: once the first results of a batch are on disk (images), or once the hidden
  temporary video exists (video).

What must hold: Ctrl-C exits 130 without a traceback and cleans up its
temporary files; SIGKILL and SIGTERM (no cleanup possible) may leave hidden
temporary files, never a visible one that is incomplete. Every visible file is checked whole
(ONNX passes the checker, an .xml has its .bin and loads, images and videos decode). The
rerun ends 0 with everything in place; an interrupted download is continued with Range.
"""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import pytest

from tests.download.fixtures_http import Fault, FileServer, ModelSpec
from tests.hardening.fixtures import (
    Logged,
    avi_bytes,
    finish,
    leftovers,
    run_tool,
    spawn,
    spawn_logged,
    visible_files,
    wait_until,
)
from tests.matting.fixtures import InferModel
from tests.matting.media import frame_times

WEBCAM = "modnet-webcam-portrait-matting"
ONNX_NAME = "modnet_webcam_portrait_matting.onnx"
STALL = 5 * 64 * 1024  # a multiple of the engine's 64 KiB reads: visible exactly on disk
SIGNALS = ["SIGINT", "SIGTERM", "SIGKILL"]


def _assert_interrupted(code: int, stderr: str, how: str) -> None:
    if how == "SIGINT":
        # 130 = 128 + SIGINT, the shell's convention, and one line saying what happened.
        assert code == 130, (code, stderr[-2000:])
        assert "Traceback" not in stderr, stderr
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
        assert errors == ["error: interrupted"], stderr
    else:
        assert code == -getattr(signal, how), (code, stderr[-2000:])


# --- download -------------------------------------------------------------------------------------


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part")) if folder.is_dir() else []


@pytest.mark.parametrize("how", SIGNALS)
@pytest.mark.parametrize("setup", ["with a cache", "two models, -j 2, json progress"])
def test_download_interrupted_mid_body_then_resumed(
    setup: str, how: str, http_server: FileServer, served_model, tmp_path: Path
) -> None:
    count = 2 if setup.startswith("two") else 1
    models: list[ModelSpec] = [
        served_model(Fault("stall", after=STALL), size=1_000_000, seed=i) for i in range(count)
    ]
    out, cache = tmp_path / "out", tmp_path / "cache"
    names = ",".join(m.name for m in models)
    args = ["download", "--name", names, "--models-dir", models[0].models_dir, "-o", out]
    args += ["--cache-dir", cache] if count == 1 else ["-j", "2", "--progress-format", "json"]
    proc = spawn(*args, cwd=tmp_path)
    try:
        for model in models:
            folder = model.path_in(out).parent
            wait_until(
                lambda f=folder: any(p.stat().st_size == STALL for p in _partials(f)),
                proc,
                what=f"stall of {model.name}",
            )
        proc.send_signal(getattr(signal, how))
        _, err = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        http_server.release()
    _assert_interrupted(proc.returncode, err, how)
    for model in models:
        assert not model.path_in(out).exists()
        [partial] = _partials(model.path_in(out).parent)
        assert partial.stat().st_size == STALL
    assert [p for p in visible_files(cache) if p.parent.name != "locks"] == []  # no entry

    rerun = run_tool(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    for model in models:
        assert model.path_in(out).read_bytes() == model.data
        gets = http_server.requests_for(f"/files/{model.name}.ckpt")
        assert [g.range_start for g in gets] == [None, STALL]
    assert leftovers(out) == []


# --- convert -------------------------------------------------------------------------------------


def _conv_dir(out: Path) -> Path:
    return out / "public" / WEBCAM


def _in_export(out: Path) -> bool:
    folder = _conv_dir(out)
    # convert writes into a staging folder first (.staging.*/), verified before it is published
    return folder.is_dir() and any(folder.glob(f".staging.*/.{ONNX_NAME}.*.part"))


def _in_ir_step(out: Path) -> bool:
    folder = _conv_dir(out)
    return folder.is_dir() and any(folder.glob(".staging.*/FP*/.staging.*"))


def _assert_whole_conversion_files(out: Path) -> None:
    """Every visible file is complete: the ONNX passes the checker, an .xml has its .bin and
    OpenVINO reads the pair."""
    import onnx
    import openvino as ov

    core = ov.Core()
    for path in visible_files(out):
        if path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix == ".xml":
            assert path.with_suffix(".bin").is_file(), f"{path} without its .bin"
            core.read_model(str(path))
        else:
            assert path.suffix == ".bin", path


STEPS = {
    "export": lambda out, log: _in_export(out),
    "IR": lambda out, log: _in_ir_step(out),
    "verification": lambda out, log: "========== Verifying" in log.stdout,
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("step", list(STEPS))
def test_convert_interrupted_at_each_step_then_rerun(
    step: str, how: str, tame_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["convert", "--checkpoint", tame_checkpoint, "-o", out]
    if step != "verification":
        args.append("--no-verify")
    run: Logged = spawn_logged(*args, cwd=tmp_path, logs=tmp_path / "logs")
    try:
        wait_until(lambda: STEPS[step](out, run), run, timeout=300, what=f"{step} step")
        run.proc.send_signal(getattr(signal, how))
        code = run.wait(timeout=120)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    _assert_interrupted(code, run.stderr, how)
    _assert_whole_conversion_files(out)
    if how == "SIGINT":
        # Ctrl-C cleans up: no temporary files, and nothing this run wrote survives (a
        # partial conversion must not later pass for an up-to-date one).
        assert leftovers(out) == []
        assert visible_files(out) == []

    rerun = run_tool(*args, cwd=tmp_path, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    if step == "verification":
        # The killed run wrote an IR it never verified: the rerun must not take it as up to
        # date, but redo and verify it.
        assert "up to date (use --force" not in rerun.stdout, rerun.stdout[-3000:]
        assert "Verifying" in rerun.stdout, rerun.stdout[-3000:]
        assert not (_conv_dir(out) / ".convert-unverified").exists()
    _assert_whole_conversion_files(out)
    assert leftovers(out) == []  # the rerun swept what a killed run left behind
    for precision in ("FP16", "FP32"):
        assert (_conv_dir(out) / precision / f"{WEBCAM}.xml").is_file()
    assert (_conv_dir(out) / ONNX_NAME).is_file()


# --- infer ---------------------------------------------------------------------------------------


def _assert_whole_media(out: Path) -> None:
    for path in visible_files(out):
        if path.suffix == ".mp4":
            frames = len(frame_times(path))
            assert frames == int(path.stem.split("_")[0].removeprefix("clip")), path
        else:
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path


IMAGES = 24


@pytest.mark.parametrize(
    "how",
    [
        "SIGINT",
        pytest.param("SIGTERM", marks=pytest.mark.slow),
        pytest.param("SIGKILL", marks=pytest.mark.slow),
    ],
)
def test_infer_interrupted_mid_batch_then_rerun(
    how: str, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(IMAGES):
        (photos / f"p{i:02d}.png").write_bytes(sample_photo.read_bytes())
    out = tmp_path / "out"
    args = ["infer", photos, "-o", out, "--model", infer_model.xml, "--background", "omz"]
    proc = spawn(*args, cwd=tmp_path)
    try:
        wait_until(lambda: any(out.glob("*_composite.png")), proc, what="first results")
        proc.send_signal(getattr(signal, how))
        _, err = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_interrupted(proc.returncode, err, how)
    done = visible_files(out)
    assert len(done) < 3 * IMAGES, "the batch was not interrupted mid-way"
    _assert_whole_media(out)
    if how == "SIGINT":
        assert leftovers(out) == []

    rerun = run_tool(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert len(visible_files(out)) == 3 * IMAGES
    _assert_whole_media(out)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_infer_interrupted_mid_video_then_rerun(
    how: str, infer_model: InferModel, tmp_path: Path
) -> None:
    frames = 40
    clip = tmp_path / f"clip{frames}.avi"
    clip.write_bytes(avi_bytes(frames=frames, width=160, height=128))
    out = tmp_path / "out"
    args = ["infer", clip, "-o", out, "--model", infer_model.xml]
    proc = spawn(*args, cwd=tmp_path)
    try:
        wait_until(
            lambda: out.is_dir() and any(".mp4" in p.name for p in out.glob(".*")),
            proc,
            what="temporary video",
        )
        proc.send_signal(getattr(signal, how))
        _, err = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_interrupted(proc.returncode, err, how)
    assert visible_files(out) == []
    if how == "SIGINT":
        assert [p for p in out.iterdir()] == []

    rerun = run_tool(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    [video] = visible_files(out)
    assert video.name == f"clip{frames}_alpha.mp4"  # .avi in, H.264 in .mp4 out
    _assert_whole_media(out)
