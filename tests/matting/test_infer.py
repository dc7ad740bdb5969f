"""``modnet-tools infer`` end to end: real checkpoint -> real IR -> real files, through the CLI
(subprocess: real exit codes and stderr) and through the runner (in process, for the cases that
only need the library)."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import openvino as ov
import pytest

from tests.conftest import RunCli
from tests.helpers import assert_one_line_error
from tests.matting.fixtures import InferModel, portrait_frames, write_video
from tests.matting.media import frame_times, probe
from toolkit.matting.batch import InferOptions, run_infer
from toolkit.matting.images import expand_inputs
from toolkit.matting.prepost import parse_background
from toolkit.matting.session import MattingSession

OMZ_BGR = np.array([155, 255, 120], np.float64)


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def _omz_demo_alpha(xml: Path, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """OMZ's demo pipeline, written out independently: 512x512 bilinear stretch, the IR at f32,
    the alpha resized back bilinear."""
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    blob = cv2.resize(frame, (512, 512), interpolation=cv2.INTER_LINEAR)
    out = compiled.create_infer_request().infer(
        {0: blob.transpose(2, 0, 1)[None].astype(np.float32)}
    )
    small = next(iter(out.values()))[0, 0]
    return np.asarray(
        cv2.resize(small, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR),
        np.float32,
    )


def test_photo_end_to_end_alpha_rgba_and_composite(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """Random checkpoint -> convert_checkpoint -> `infer` on the real photo (and a non-square
    JPEG crop of it): sizes, the cut-out's alpha, the composite formula, and OMZ's pipeline."""
    wide = tmp_path / "wide.jpg"
    cv2.imwrite(
        str(wide), _read(sample_photo, cv2.IMREAD_COLOR)[100:400, :], [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    out = tmp_path / "out"
    proc = run_cli(
        "infer", sample_photo, wide, "-o", out, "--model-root", infer_model.root,
        "--background", "omz",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    for source, stem, ext in ((sample_photo, "astronaut", ".png"), (wide, "wide", ".jpg")):
        frame = _read(source, cv2.IMREAD_COLOR)
        alpha = _read(out / f"{stem}_alpha.png")
        assert alpha.dtype == np.uint8 and alpha.shape == frame.shape[:2]

        rgba = _read(out / f"{stem}_rgba.png")
        assert rgba.shape == (*frame.shape[:2], 4)
        assert np.array_equal(rgba[..., 3], alpha)
        assert np.array_equal(rgba[..., :3], frame)

        # The default stretch rule gives OMZ's demo matte (8-bit rounding aside).
        expected = np.rint(_omz_demo_alpha(infer_model.xml, frame) * 255)
        assert np.abs(alpha.astype(np.float64) - expected).max() <= 1

        comp_path = out / f"{stem}_composite{ext}"
        comp = _read(comp_path, cv2.IMREAD_COLOR)
        a = alpha.astype(np.float64)[..., None] / 255.0
        formula = frame.astype(np.float64) * a + OMZ_BGR * (1.0 - a)
        if ext == ".png":  # lossless: the formula to the rounding
            assert np.abs(comp - formula).max() <= 0.5 + 1e-3
        else:  # a JPEG composite is the formula up to JPEG's loss
            assert np.abs(comp - formula).mean() < 2.5
    assert alpha.std() > 3  # the matte varies: a meaningful comparison
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_video_in_video_out_same_frames_and_size(
    run_cli: RunCli, infer_model: InferModel, sample_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "infer", sample_video, "-o", out, "--model-root", infer_model.root,
        "--background", "blur:9", "--side-by-side",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    source = cv2.VideoCapture(str(sample_video))
    source_frames = []
    while True:
        ok, frame = source.read()
        if not ok:
            break
        source_frames.append(frame)
    assert len(source_frames) == 8
    session = MattingSession.from_xml(infer_model.xml)
    for name, width in (
        ("clip_alpha.mp4", 320),  # .avi in, H.264 in .mp4 out
        ("clip_composite.mp4", 320),
        ("clip_side.mp4", 640),
    ):
        got = probe(out / name, gray=name == "clip_alpha.mp4")
        matte = name == "clip_alpha.mp4"  # full range (0..255 as it is): FFmpeg says yuvj420p
        assert (got.codec, got.pix_fmt) == ("h264", "yuvj420p" if matte else "yuv420p"), name
        assert len(got.images) == 8, name
        assert all(f.shape[:2] == (192, width) for f in got.images), name
        if name == "clip_alpha.mp4":  # frame 3's matte (MJPG's decode differs a little)
            expected = session.matte(source_frames[3]) * 255
            assert np.abs(got.images[3].astype(np.float64) - expected).mean() < 3


def test_a_bad_input_fails_alone_and_the_run_exits_1(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_photo, folder / "a_good.png")
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "d_text.jpg").write_text("not an image")
    out = tmp_path / "out"
    proc = run_cli(
        "infer", folder, tmp_path / "missing.png", "-o", out, "--model-root", infer_model.root
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 5, proc.stderr
    for needle in (
        "b_empty.jpg: the file is empty",
        "c_corrupt.png",
        "d_text.jpg: not an image",
        "missing.png: no such file",
    ):
        assert any(needle in e for e in errors), (needle, proc.stderr)
    assert errors[-1] == "error: 4 of 5 inputs failed"
    assert sorted(p.name for p in out.iterdir()) == ["a_good_alpha.png", "a_good_rgba.png"]


def test_an_input_file_is_never_overwritten(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    shutil.copy(sample_photo, tmp_path / "p.png")
    # An input that happens to be named like another input's output.
    decoy = tmp_path / "p_alpha.png"
    shutil.copy(sample_photo, decoy)
    before = decoy.read_bytes()
    # (-d alone also finds the model, as `convert -d` puts it there by default)
    proc = run_cli("infer", "p.png", "p_alpha.png", "-o", ".", "-d", infer_model.root)
    assert proc.returncode == 1
    assert "refusing to write" in proc.stderr and "which is an input file" in proc.stderr
    assert decoy.read_bytes() == before
    assert (tmp_path / "p_alpha_alpha.png").is_file()  # the other input still ran


def test_missing_model_says_to_download_and_convert(
    run_cli: RunCli, sample_photo: Path, tmp_path: Path
) -> None:
    proc = run_cli("infer", sample_photo, "--model-root", tmp_path / "nothing")
    assert_one_line_error(proc, "`modnet-tools download` then `modnet-tools convert`", "--model")
    proc = run_cli("infer", sample_photo, "--model", tmp_path / "none.xml")
    assert_one_line_error(proc, "none.xml: no such file", "modnet-tools convert")


def test_single_bad_input_and_bad_camera_are_one_line(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert_one_line_error(
        run_cli("infer", "zero.jpg", "--model-root", infer_model.root),
        "zero.jpg: the file is empty",
    )
    assert_one_line_error(
        run_cli("infer", "57", "--model-root", infer_model.root), "camera 57: cannot open"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--resize", "fit"], "--resize"),
        (["--background", "nope"], "--background"),
        (["--inference-precision", "int4"], "--inference-precision"),
    ],
)
def test_usage_errors_exit_2(
    run_cli: RunCli, sample_photo: Path, args: list[str], needle: str
) -> None:
    proc = run_cli("infer", sample_photo, *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_infer_runs_where_torch_cannot_be_imported(
    infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """An inference-only install has no torch: block it (and onnx) at import time and run."""
    script = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxruntime", "onnxscript"):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Block())
        from toolkit.cli import main
        try:
            main(["infer", {str(sample_photo)!r}, "-o", {str(tmp_path / "out")!r},
                  "--model-root", {str(infer_model.root)!r}, "--background", "white"])
        except SystemExit as exc:
            code = exc.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime"))
        print("EXIT", code, "HEAVY", heavy)
        """
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "EXIT 0 HEAVY []" in proc.stdout, (proc.stdout, proc.stderr)
    assert (tmp_path / "out" / "astronaut_composite.png").is_file()


# --- the runner in process ----------------------------------------------------------------------


def test_no_alpha_writes_only_the_other_results(
    run_cli: RunCli,
    infer_model: InferModel,
    sample_photo: Path,
    sample_video: Path,
    tmp_path: Path,
) -> None:
    """OMZ's demo writes only the composite; ``--no-alpha`` does the same (and for a video
    saves the matte's whole encode). The composite is the same as with the matte written."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    common = ["--model-root", infer_model.root, "-b", "omz", "--no-rgba"]
    proc = run_cli("infer", sample_photo, sample_video, "-o", out, "--no-alpha", *common)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut_composite.png",
        "clip_composite.mp4",
    ]
    proc = run_cli("infer", sample_photo, sample_video, "-o", ref, *common)  # same session mode
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(
        _read(out / "astronaut_composite.png"), _read(ref / "astronaut_composite.png")
    )
    assert len(frame_times(out / "clip_composite.mp4")) == 8

    # A video with nothing left to write fails alone; the photo still gets its cut-out.
    lone = tmp_path / "lone"
    proc = run_cli(
        "infer",
        sample_video,
        sample_photo,
        "-o",
        lone,
        "--no-alpha",
        "--model-root",
        infer_model.root,
    )
    assert proc.returncode == 1
    assert "nothing to write for a video with --no-alpha" in proc.stderr
    assert sorted(p.name for p in lone.iterdir()) == ["astronaut_rgba.png"]
    proc = run_cli(
        "infer",
        sample_photo,
        "-o",
        lone,
        "--no-alpha",
        "--no-rgba",
        "--model-root",
        infer_model.root,
    )
    assert proc.returncode == 2 and "nothing to write" in proc.stderr, proc.stderr


def test_keep_aspect_side_by_side_and_no_rgba(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    photo = tmp_path / "wide.png"
    cv2.imwrite(str(photo), astronaut_bgr[:300])
    session = MattingSession.from_xml(infer_model.xml, resize="keep-aspect")
    options = InferOptions(output_dir=tmp_path / "out", side_by_side=True, rgba=False)
    summary = run_infer(session, expand_inputs([str(photo)]), options)
    assert not summary.failed
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["wide_alpha.png", "wide_side.png"]
    alpha = _read(tmp_path / "out" / "wide_alpha.png")
    assert alpha.shape == (300, 512)
    assert np.abs(alpha - np.rint(session.matte(astronaut_bgr[:300]) * 255)).max() <= 1
    side = _read(tmp_path / "out" / "wide_side.png")
    assert side.shape == (300, 1024, 3)
    assert np.array_equal(side[:, :512], astronaut_bgr[:300])
    assert np.array_equal(side[:, 512:, 0], alpha)  # no background: the matte on the right


def test_image_background_and_colliding_names(
    infer_session: MattingSession, astronaut_bgr: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "p.jpg"), astronaut_bgr)
    backdrop = tmp_path / "beach.png"
    cv2.imwrite(str(backdrop), np.full((50, 80, 3), (200, 100, 0), np.uint8))
    options = InferOptions(
        output_dir=tmp_path / "out", background=parse_background(str(backdrop), lambda p: _read(p))
    )
    items = expand_inputs([str(tmp_path / "a" / "p.jpg"), str(tmp_path / "b" / "p.jpg")])
    summary = run_infer(infer_session, items, options)
    assert not summary.failed and summary.frames == 2
    assert (tmp_path / "out" / "p_composite.jpg").is_file()
    assert (tmp_path / "out" / "p-2_composite.jpg").is_file()
    alpha = _read(tmp_path / "out" / "p_alpha.png")
    comp = _read(tmp_path / "out" / "p_composite.jpg", cv2.IMREAD_COLOR)
    frame = _read(tmp_path / "a" / "p.jpg", cv2.IMREAD_COLOR)
    a = alpha.astype(np.float64)[..., None] / 255
    formula = frame * a + np.array([200, 100, 0]) * (1 - a)
    assert np.abs(comp - formula).mean() < 2.5


def test_ofd_video_keeps_frame_count_and_smooths_flicker(
    infer_session: MattingSession, astronaut_bgr: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    frames = portrait_frames(astronaut_bgr, 6, 256, 160)
    frames[3] = np.full_like(frames[3], 255)  # a one-frame flash: the matte flickers there
    clip = write_video(tmp_path / "flash.avi", frames)
    results = {}
    for ofd in (False, True):
        out = tmp_path / f"ofd{ofd}"
        summary = run_infer(
            infer_session, expand_inputs([str(clip)]), InferOptions(output_dir=out, ofd=ofd)
        )
        assert not summary.failed and summary.frames == 6
        got = [f.astype(np.float64) for f in probe(out / "flash_alpha.mp4", gray=True).images]
        assert len(got) == 6
        results[ofd] = got
    # Frames 0-2 and 4-5 are the same with and without OFD except where OFD fixed them.
    jump_plain = np.abs(results[False][3] - results[False][2]).mean()
    jump_ofd = np.abs(results[True][3] - results[True][2]).mean()
    assert jump_ofd < jump_plain


@pytest.mark.slow
def test_cli_chain_random_checkpoint_convert_infer(
    run_cli: RunCli, sample_photo: Path, tmp_path: Path
) -> None:
    """The README's offline flow, command by command."""
    assert run_cli("random-checkpoint", "random.ckpt").returncode == 0
    proc = run_cli("convert", "--checkpoint", "random.ckpt", "--precision", "FP32", "-o", "models")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("infer", sample_photo, "-o", "out", "--model-root", "models")
    assert proc.returncode == 0, proc.stderr
    assert _read(tmp_path / "out" / "astronaut_alpha.png").shape == (512, 512)


@pytest.mark.slow
def test_verify_compares_ir_onnx_and_pytorch(
    run_cli: RunCli, infer_model: InferModel, touchy_checkpoint: Path, sample_photo: Path
) -> None:
    proc = run_cli(
        "infer", sample_photo, "--verify", "--checkpoint", infer_model.checkpoint,
        "--model-root", infer_model.root, "-o", "out",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "PyTorch" in proc.stdout and "ONNX Runtime" in proc.stdout and "OpenVINO" in proc.stdout
    # The IR against another checkpoint's PyTorch model: out of tolerance, exit 1, no results.
    proc = run_cli(
        "infer", sample_photo, "--verify", "--checkpoint", touchy_checkpoint,
        "--model-root", infer_model.root, "-o", "out2",
    )  # fmt: skip
    assert_one_line_error(proc)


def test_verify_finds_the_downloaded_checkpoint_under_the_model_root(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """After `download -o R` and `convert -o R`, `infer --model-root R --verify` needs nothing
    else: the checkpoint is looked for under R, not only under the default ./cache."""
    root = tmp_path / "R"
    model = root / "public" / "modnet-webcam-portrait-matting"
    shutil.copytree(infer_model.xml.parent, model / "FP32")
    shutil.copy(infer_model.onnx, model / infer_model.onnx.name)
    shutil.copy(infer_model.checkpoint, model / "modnet_webcam_portrait_matting.ckpt")
    proc = run_cli("infer", sample_photo, "--verify", "--model-root", root, "-o", "out")
    assert proc.returncode == 0, proc.stderr
    assert "ONNX Runtime" in proc.stdout and "OpenVINO" in proc.stdout
    (model / "modnet_webcam_portrait_matting.ckpt").unlink()
    proc = run_cli("infer", sample_photo, "--verify", "--model-root", root, "-o", "out2")
    assert_one_line_error(proc, "needs the PyTorch checkpoint", str(model), "cache")
    assert not (tmp_path / "out2").exists()


def test_outputs_of_a_rotated_phone_photo_are_upright_at_its_displayed_size(
    infer_session: MattingSession, astronaut_bgr: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    from PIL import Image

    stored = cv2.cvtColor(astronaut_bgr[:, :384], cv2.COLOR_BGR2RGB)  # 384 wide, 512 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    summary = run_infer(
        infer_session, expand_inputs([str(tmp_path / "phone.jpg")]), InferOptions(tmp_path / "o")
    )
    assert not summary.failed
    assert _read(tmp_path / "o" / "phone_alpha.png").shape == (384, 512)
    assert _read(tmp_path / "o" / "phone_rgba.png").shape == (384, 512, 4)


def test_png_compression_changes_size_not_pixels(
    infer_session: MattingSession, sample_photo: Path, tmp_path: Path
) -> None:
    items = expand_inputs([str(sample_photo)])
    for level in (0, 2):
        summary = run_infer(
            infer_session, items, InferOptions(tmp_path / f"l{level}", png_compression=level)
        )
        assert not summary.failed
    for name in ("astronaut_alpha.png", "astronaut_rgba.png"):
        stored, packed = tmp_path / "l0" / name, tmp_path / "l2" / name
        assert np.array_equal(_read(stored), _read(packed))
        assert stored.stat().st_size > 1.5 * packed.stat().st_size
