"""What a user points the tools at, through the real CLI: camera-like arguments that are not
cameras, stills named like videos, HEIC/AVIF photos, size limits in every command that reads
images, and which files a folder run leaves out (issue 11, items 9-12)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import RunCli
from tests.matting.fixtures import InferModel, portrait_frames, write_video
from toolkit.matting.images import MAX_CAMERA_INDEX, expand, load_image
from toolkit.matting.marker import has_mark
from toolkit.matting.sniff import classify_media
from toolkit.perf.calibration import CalibrationError, load_folder


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def _photo(path: Path, sample_photo: Path, size: tuple[int, int] | None = None) -> Path:
    image = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    if size is not None:
        image = cv2.resize(image, size)
    ext = path.suffix.lower() if path.suffix.lower() in (".png", ".jpg") else ".jpg"
    ok, data = cv2.imencode(ext, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _bomb_jpeg(path: Path, side: int = 30000) -> Path:
    """A few hundred bytes of real JPEG whose frame header declares ``side`` x ``side``."""
    ok, data = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    raw = bytearray(data.tobytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(raw))
    assert len(raw) < 1000
    return path


# --- item 9: camera-like arguments -------------------------------------------------------------


_NOT_CAMERAS = ["99999999999999999999", "²", "٣", "-1", "-0", "0x1", "+2", "256"]


def test_camera_like_arguments_that_are_not_cameras_fail_alone(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    photo = _photo(tmp_path / "p.jpg", sample_photo)
    proc = run_cli("infer", "-m", infer_model.xml, *_NOT_CAMERAS, photo, "-o", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == len(_NOT_CAMERAS) + 1, errors  # one line each + "8 of 9 failed"
    for spec, line in zip(_NOT_CAMERAS, errors, strict=False):
        assert line.startswith(f"error: {spec}: not a camera index"), line
    assert errors[-1] == f"error: {len(_NOT_CAMERAS)} of {len(_NOT_CAMERAS) + 1} inputs failed"
    assert (tmp_path / "out" / "p_alpha.png").is_file()  # the rest of the batch ran


def test_a_real_camera_index_still_means_a_camera(tmp_path: Path) -> None:
    items = expand(["0", str(MAX_CAMERA_INDEX)]).items
    assert [(i.kind, i.camera) for i in items] == [("camera", 0), ("camera", MAX_CAMERA_INDEX)]


def test_an_unknown_option_is_still_bad_usage(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    proc = run_cli("infer", "-m", infer_model.xml, sample_photo, "--max-pixel", "5")
    assert proc.returncode == 2 and _errors(proc.stderr) == [
        "error: no such option: --max-pixel (see 'modnet-tools infer --help')"
    ]


# --- items 10 and 11: still or video by content, limits everywhere ------------------------------


def test_still_or_video_is_decided_by_content_not_name(tmp_path: Path, sample_photo: Path) -> None:
    base = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    clip = write_video(tmp_path / "clip.avi", portrait_frames(base, 3, 64, 64))
    cases = {
        "photo.avi": (_photo(tmp_path / "a.jpg", sample_photo), "image"),
        "photo.mp4": (_photo(tmp_path / "b.png", sample_photo), "image"),
        "IMG_0001": (_photo(tmp_path / "c.jpg", sample_photo), "image"),
        "clip.jpg": (clip, "video"),
        "clip": (clip, "video"),
    }
    for name, (source, kind) in cases.items():
        dest = tmp_path / "named" / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(source, dest)
        assert classify_media(dest) == kind, name
    found = expand([str(tmp_path / "named")]).items
    assert sorted((Path(i.label).name, i.kind) for i in found) == sorted(
        (n, k) for n, (_, k) in cases.items()
    )


_VIDEO_NAMES = (".avi", ".mp4", ".mov", ".mkv", ".webm")


def test_images_named_like_videos_are_images_under_the_same_limits(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    photo = _photo(tmp_path / "p12.jpg", sample_photo)
    disguised = []
    for ext in _VIDEO_NAMES:
        disguised.append(tmp_path / "in" / f"p12{ext}")
        disguised[-1].parent.mkdir(exist_ok=True)
        shutil.copy(photo, disguised[-1])
    refused = run_cli("infer", "-m", infer_model.xml, *disguised, "--max-pixels", "100000")
    assert refused.returncode == 1
    assert _errors(refused.stderr)[:-1] == [
        f"error: {path}: 512x512 is 262,144 pixels, over the limit of 100,000 "
        "(raise it with --max-pixels if this is intended)"
        for path in disguised
    ]
    done = run_cli("infer", "-m", infer_model.xml, tmp_path / "in", "-o", tmp_path / "o")
    assert done.returncode == 0, done.stderr
    written = sorted(p.suffix for p in (tmp_path / "o").iterdir())
    assert written == [".png"] * 2 * len(_VIDEO_NAMES)  # image results, not videos


def _oriented(path: Path, sample_photo: Path) -> Path:
    """A 96x64 (W x H) photo stored sideways with EXIF orientation 6 (turn 90 degrees right)."""
    path.parent.mkdir(exist_ok=True)
    rgb = Image.open(sample_photo).convert("RGB").resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(path, exif=exif.tobytes(), quality=90)
    return path


def test_heic_and_avif_photos_are_upright_images_not_videos(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    names = ("phone.heic", "camera.HEIF", "web.avif")
    photos = [_oriented(tmp_path / "in" / name, sample_photo) for name in names]
    for photo in photos:
        assert classify_media(photo) == "image"
        assert load_image(photo).shape == (96, 64, 3)  # upright: EXIF orientation applied
    proc = run_cli("infer", "-m", infer_model.xml, tmp_path / "in", "-o", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    for photo in photos:
        alpha = cv2.imread(str(tmp_path / "o" / f"{photo.stem}_alpha.png"), cv2.IMREAD_UNCHANGED)
        assert alpha is not None and alpha.shape == (96, 64), photo
    assert len(list((tmp_path / "o").iterdir())) == 2 * len(names)  # no video among them
    tiny = run_cli("infer", "-m", infer_model.xml, *photos, "--max-pixels", "1000")
    assert tiny.returncode == 1 and tiny.stderr.count("over the limit of 1,000") == 3


def test_evaluate_refuses_a_tiny_jpeg_declaring_30000x30000_before_decoding(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    cv2.imwrite(str(data / "ok.jpg"), np.full((64, 64, 3), 90, np.uint8))
    matte = np.zeros((64, 64, 4), np.uint8)
    matte[..., 3] = 200
    cv2.imwrite(str(data / "ok.png"), matte)
    _bomb_jpeg(data / "bomb.jpg")
    cv2.imwrite(str(data / "bomb.png"), matte)
    report = tmp_path / "r.json"
    proc = run_cli("evaluate", "--images", data, "--model", infer_model.xml, "--json", report)
    assert proc.returncode == 1, proc.stderr  # a skipped pair is reported and fails the run
    assert "30000x30000 is 900,000,000 pixels, over the limit of 70,000,000" in proc.stderr
    doc = json.loads(report.read_text())
    assert doc["images"] == 1 and doc["skipped_by_reason"]["too_large"] == 1
    # The limit is the user's: lowered, the 64x64 pair is refused too, and nothing is left.
    low = run_cli("evaluate", "--images", data, "--model", infer_model.xml, "--max-pixels", "1000")
    assert low.returncode == 1 and "none of the 2 image(s) could be evaluated" in low.stderr


def test_infer_and_quantize_refuse_the_same_bomb(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    folder = tmp_path / "bombs"
    folder.mkdir()
    bomb = _bomb_jpeg(folder / "b.jpg")
    proc = run_cli("infer", "-m", infer_model.xml, bomb)
    assert proc.returncode == 1 and "over the limit of 70,000,000" in proc.stderr
    held = run_cli("quantize", "-o", infer_model.root, "--holdout", folder)
    assert held.returncode == 1 and _errors(held.stderr) == [
        f"error: --holdout {folder}: none of its 1 images could be read ({bomb}: 30000x30000 "
        "is 900,000,000 pixels, over the limit of 70,000,000 (raise it with --max-pixels if "
        "this is intended))"
    ]
    with pytest.raises(CalibrationError, match="over the limit of 100"):
        list(load_folder(folder, max_pixels=100))


# --- item 12: what folders and globs leave out --------------------------------------------------


def test_folders_skip_only_this_tools_outputs_and_say_so(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("the_dark_side.jpg", "me_alpha.jpg", "cat_rgba.png", "x_composite.png"):
        _photo(folder / name, sample_photo, (96, 96))
    first = run_cli("infer", "-m", infer_model.xml, folder, "-o", folder)
    assert first.returncode == 0, first.stderr
    assert "skipped" not in first.stderr  # real photos with output-like names are processed
    assert len(first.stdout.splitlines()) == 4
    written = sorted(p.name for p in folder.iterdir())
    assert "the_dark_side_alpha.png" in written and len(written) == 12
    assert has_mark(folder / "the_dark_side_alpha.png")
    assert not has_mark(folder / "the_dark_side.jpg")
    # Again on the same folder, and through a glob: the 8 results are left out, and said so.
    for spec in (str(folder), str(folder / "*")):
        again = run_cli("infer", "-m", infer_model.xml, spec, "-o", tmp_path / "again")
        assert again.returncode == 0, again.stderr
        assert len(again.stdout.splitlines()) == 4
        assert "skipped 8 file(s) this tool wrote" in again.stderr
    # A result named explicitly is processed: the rule applies to folders and globs only.
    explicit = folder / "cat_rgba_alpha.png"
    one = run_cli("infer", "-m", infer_model.xml, explicit, "-o", tmp_path / "explicit")
    assert one.returncode == 0 and (tmp_path / "explicit" / "cat_rgba_alpha_alpha.png").is_file()


def test_an_unmarked_result_is_skipped_only_beside_its_source(
    sample_photo: Path, tmp_path: Path
) -> None:
    _photo(tmp_path / "clip.jpg", sample_photo)
    _photo(tmp_path / "clip_side.jpg", sample_photo)  # old-style result: its source is here
    _photo(tmp_path / "dark_side.jpg", sample_photo)  # a photo: no "dark" beside it
    found = expand([str(tmp_path)])
    assert [Path(i.label).name for i in found.items] == ["clip.jpg", "dark_side.jpg"]
    assert [p.name for p in found.skipped] == ["clip_side.jpg"]


def test_a_video_result_is_recognised_by_its_mark_wherever_it_is(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    base = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    (tmp_path / "in").mkdir()
    clip = write_video(tmp_path / "in" / "walk_side.avi", portrait_frames(base, 3, 96, 64))
    first = run_cli("infer", "-m", infer_model.xml, clip.parent, "-o", tmp_path / "out")
    assert first.returncode == 0, first.stderr  # "walk_side" is a name, not an output
    (result,) = (tmp_path / "out").iterdir()
    assert result.name == "walk_side_alpha.mp4" and has_mark(result)
    moved = tmp_path / "elsewhere" / result.name
    moved.parent.mkdir()
    result.rename(moved)
    again = run_cli("infer", "-m", infer_model.xml, moved.parent, "-o", tmp_path / "o2")
    assert again.returncode == 1
    assert (
        f"error: {moved.parent}: no images or videos found (only 1 of this tool's outputs, skipped)"
        in again.stderr
    )
