"""Fuzzing what ``infer`` reads: images, videos and special files, corrupted every way we know.

The contract for every input, however broken: it ends in an output or in one line naming it,
never a traceback, a hang, or the loss of the rest of the batch. It is checked twice: on the
library (:func:`toolkit.matting.images.load_image`, :class:`toolkit.matting.video.VideoReader`), where the
only exception allowed out is :class:`~toolkit.matting.images.InputError`, and through the real
``modnet-tools infer`` on folders mixing good and bad files, where the good files must still
be processed and the run must exit 1.

A fixed corpus (``tests/hardening/fixtures.py``: truncations, bit flips, wrong extensions,
empty and random files, headers declaring absurd sizes) pins the expected outcome of each
file; hypothesis then mutates real encodings at random around it (derandomized, so CI sees
the same examples every run and the README's counts are exact).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.fixtures import (
    IMAGE_FORMATS,
    BadFile,
    assert_clean_failure,
    avi_bytes,
    bad_images,
    bad_videos,
    encode,
    error_lines,
    leftovers,
    run_tool,
    small_photo,
    write_corpus,
)
from tests.matting.fixtures import InferModel
from toolkit.matting.images import IMAGE_EXTENSIONS, MIN_SIDE, InputError, load_image
from toolkit.matting.sniff import classify_media
from toolkit.matting.video import VideoReader

FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

IMAGE_CORPUS = bad_images(video_bytes=avi_bytes())
VIDEO_GOOD = avi_bytes()
VIDEO_CORPUS = bad_videos(VIDEO_GOOD)


def _check_image_outcome(path: Path, case: BadFile | None = None) -> str:
    """Load ``path``; return "output" or "error" after checking the contract of each."""
    try:
        image = load_image(path)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and message.strip(), repr(message)
        assert str(path) in message, message
        if case is not None and case.needle:
            assert case.needle in message, message
        return "error"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
    assert min(image.shape[:2]) >= MIN_SIDE
    return "output"


@pytest.mark.parametrize("case", IMAGE_CORPUS, ids=lambda c: c.name)
def test_image_corpus_through_the_library(case: BadFile, tmp_path: Path, watchdog: None) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.data)
    if classify_media(path) == "video":  # content decides: the video path processes it
        assert case.name.startswith("video_"), case.name
        return
    outcome = _check_image_outcome(path, case)
    if case.expect != "either":
        assert outcome == case.expect


_EXTENSIONS = sorted(IMAGE_EXTENSIONS)


@settings(FUZZ, max_examples=150)
@given(data=st.binary(min_size=0, max_size=3000), ext=st.sampled_from(_EXTENSIONS))
def test_random_bytes_under_any_image_extension(data: bytes, ext: str, watchdog: None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{ext}"
        path.write_bytes(data)
        _check_image_outcome(path)


_ENCODED = {fmt: encode(small_photo(), fmt) for fmt in IMAGE_FORMATS}

_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.integers(0, 1 << 20), min_size=1, max_size=12)),
    st.tuples(
        st.just("overwrite"), st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64))
    ),
    st.tuples(
        st.just("insert"), st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64))
    ),
)


def _mutate(data: bytes, mutations: list[tuple[str, object]]) -> bytes:
    out = bytearray(data)
    for kind, arg in mutations:
        if not out:
            break
        if kind == "truncate":
            assert isinstance(arg, float)
            del out[int(len(out) * arg) :]
        elif kind == "flip":
            assert isinstance(arg, list)
            for bit in arg:
                out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
        else:
            assert isinstance(arg, tuple)
            where, blob = arg
            at = int(len(out) * where)
            if kind == "overwrite":
                out[at : at + len(blob)] = blob
            else:
                out[at:at] = blob
    return bytes(out)


@settings(FUZZ, max_examples=300)
@given(
    fmt=st.sampled_from(IMAGE_FORMATS),
    mutations=st.lists(_mutation, min_size=1, max_size=3),
    ext=st.sampled_from([".jpg", ".png", ".bmp", ".gif", ".tif", ".webp"]),
)
def test_mutated_real_images(
    fmt: str, mutations: list[tuple[str, object]], ext: str, watchdog: None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mutant{ext}"
        path.write_bytes(_mutate(_ENCODED[fmt], mutations))
        _check_image_outcome(path)


def _check_video_outcome(path: Path, case: BadFile | None = None) -> str:
    try:
        with VideoReader(path, max_frames=50) as reader:
            frames = list(reader)
            size = (reader.height, reader.width)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        if case is not None and case.needle:
            assert case.needle in message, message
        return "error"
    assert frames, "an opened video yields at least its first frame"
    for frame in frames:
        assert frame.dtype == np.uint8 and frame.shape == (*size, 3)
    return "output"


@pytest.mark.parametrize("case", VIDEO_CORPUS, ids=lambda c: c.name)
def test_video_corpus_through_the_library(case: BadFile, tmp_path: Path, watchdog: None) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.data)
    outcome = _check_video_outcome(path, case)
    if case.expect != "either":
        assert outcome == case.expect


@settings(FUZZ, max_examples=60)
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_real_videos(mutations: list[tuple[str, object]], watchdog: None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.avi"
        path.write_bytes(_mutate(VIDEO_GOOD, mutations))
        _check_video_outcome(path)


# --- the whole command on mixed folders ---------------------------------------------------------


def _outputs_of(out: Path, stem: str, video: bool) -> list[Path]:
    if video:
        return sorted(out.glob(f"{stem}_alpha.*"))
    still = [p for p in (out / f"{stem}_alpha.png", out / f"{stem}_rgba.png") if p.exists()]
    return still or sorted(out.glob(f"{stem}_alpha.*"))  # a video by content, whatever its name


def _check_batch(
    proc_stderr: str,
    out: Path,
    folder: Path,
    cases: list[BadFile],
    good: dict[str, Path],
    video: bool,
) -> None:
    """Each case: exactly one of (its outputs, one error line naming it); good files done."""
    errors = error_lines(proc_stderr)
    failed = 0
    for case in cases:
        path = folder / case.name
        mine = [ln for ln in errors if ln.startswith(f"error: {path}:")]
        outputs = _outputs_of(out, Path(case.name).stem, video)
        assert len(mine) <= 1, mine
        if mine:
            failed += 1
            assert not outputs, (case.name, outputs)
            assert case.expect != "output", (case.name, mine)
            if case.needle:
                assert case.needle in mine[0], mine[0]
        else:
            assert outputs, f"{case.name}: neither an output nor an error line"
            assert case.expect != "error", (case.name, outputs)
    for stem, source in good.items():
        outputs = _outputs_of(out, stem, video)
        assert outputs, f"the good input {source} was not processed"
        if not video:
            alpha = cv2.imread(str(out / f"{stem}_alpha.png"), cv2.IMREAD_UNCHANGED)
            photo = cv2.imread(str(source), cv2.IMREAD_COLOR)
            assert alpha is not None and photo is not None
            assert alpha.shape == photo.shape[:2] and alpha.std() > 0
        else:
            cap = cv2.VideoCapture(str(outputs[0]))
            assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
            cap.release()
    total = len(cases) + len(good)
    assert errors[-1] == f"error: {failed} of {total} inputs failed", errors[-1]
    assert leftovers(out) == []


def test_infer_on_a_folder_of_bad_images_processes_the_good_ones(
    infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    write_corpus(folder, IMAGE_CORPUS)
    good = {"good_a": folder / "good_a.png", "zz_good_b": folder / "zz_good_b.jpg"}
    good["good_a"].write_bytes(sample_photo.read_bytes())
    cv2.imwrite(str(good["zz_good_b"]), small_photo(200, 120))
    out = tmp_path / "out"
    proc = run_tool("infer", folder, "-o", out, "--model", infer_model.xml, cwd=tmp_path)
    assert_clean_failure(proc, "inputs failed")
    _check_batch(proc.stderr, out, folder, IMAGE_CORPUS, good, video=False)


@pytest.mark.slow
def test_infer_on_a_folder_of_bad_videos_processes_the_good_one(
    infer_model: InferModel, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    write_corpus(folder, VIDEO_CORPUS)
    (folder / "good.avi").write_bytes(VIDEO_GOOD)
    out = tmp_path / "out"
    proc = run_tool("infer", folder, "-o", out, "--model", infer_model.xml, cwd=tmp_path)
    assert_clean_failure(proc, "inputs failed")
    _check_batch(proc.stderr, out, folder, VIDEO_CORPUS, {"good": folder / "good.avi"}, True)


def test_special_files_fail_alone_without_hanging(
    infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """A FIFO (reading it would block forever), character devices, a folder named like an
    image, a dangling symlink and a symlink loop, between two good photos."""
    (tmp_path / "a.png").write_bytes(sample_photo.read_bytes())
    (tmp_path / "z.png").write_bytes(sample_photo.read_bytes())
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    specials = ["pipe.jpg", "/dev/zero", "/dev/urandom", "folder.jpg", "dangling.png", "loop.png"]
    out = tmp_path / "out"
    proc = run_tool(
        "infer", "a.png", *specials, "z.png", "-o", out, "--model", infer_model.xml,
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert_clean_failure(proc, f"{len(specials)} of {len(specials) + 2} inputs failed")
    errors = error_lines(proc.stderr)
    for spec in specials:
        assert sum(ln.startswith(f"error: {spec}:") for ln in errors) == 1, (spec, errors)
    assert sorted(p.name for p in out.iterdir()) == [
        "a_alpha.png", "a_rgba.png", "z_alpha.png", "z_rgba.png",
    ]  # fmt: skip
