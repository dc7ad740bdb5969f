"""``--skip-existing`` locally: whole outputs are kept, damaged or missing ones redone, and the
temporaries a killed run left are cleared (only names this toolkit's writers use)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from tests.conftest import RunCli
from tests.matting.fixtures import InferModel, portrait_frames, write_video
from toolkit.matting.resume import output_whole, outputs_whole, sweep_partials


def _photos(folder: Path, base: npt.NDArray[np.uint8], count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"p{i}.jpg"
        assert cv2.imwrite(str(path), base[8 * i : 8 * i + 300, 0:280])
        paths.append(path)
    return paths


def test_whole_and_damaged_outputs_are_told_apart(
    tmp_path: Path, astronaut_bgr: npt.NDArray[np.uint8]
) -> None:
    png = tmp_path / "a.png"
    assert cv2.imwrite(str(png), astronaut_bgr)
    assert output_whole(png)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    assert not output_whole(cut)
    flipped = bytearray(png.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one bad byte inside the image data: CRC mismatch
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    assert not output_whole(tmp_path / "flipped.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert not output_whole(tmp_path / "empty.png")
    assert not output_whole(tmp_path / "missing.png")
    video = write_video(tmp_path / "v.avi", portrait_frames(astronaut_bgr, 6, 160, 128))
    assert output_whole(video)
    (tmp_path / "short.avi").write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    assert not output_whole(tmp_path / "short.avi")
    assert not outputs_whole([])  # nothing planned is not "done"


def test_sweep_removes_only_this_toolkits_temporaries(tmp_path: Path) -> None:
    dest = tmp_path / "p0_alpha.png"
    ours = [tmp_path / ".p0_alpha.png.ab12_xyz.png.part", tmp_path / ".clip_alpha.avi.k2j4h5g6.avi"]
    theirs = [
        tmp_path / ".p0_alpha.png.notes",  # a user's hidden file next to it
        tmp_path / ".p0_alpha.png.abc.png.part",  # not our random-name length
        tmp_path / ".other.png.ab12_xyz.png.part",  # another output's (not planned)
        dest,
    ]
    for path in [*ours, *theirs]:
        path.write_bytes(b"x")
    removed = sweep_partials([dest, tmp_path / "clip_alpha.avi"])
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in theirs)


def test_skip_existing_redoes_only_missing_or_damaged_outputs(
    run_cli: RunCli,
    infer_model: InferModel,
    tmp_path: Path,
    astronaut_bgr: npt.NDArray[np.uint8],
) -> None:
    photos = _photos(tmp_path / "in", astronaut_bgr, 4)
    out = tmp_path / "out"
    first = run_cli("infer", tmp_path / "in", "-m", infer_model.xml, "-o", out)
    assert first.returncode == 0, first.stderr
    reference = {p.name: p.read_bytes() for p in out.iterdir()}
    inode = {p.name: p.stat().st_ino for p in out.iterdir()}
    # A run killed mid-way: p1's cut-out missing, p2's matte cut short, a temporary left.
    (out / "p1_rgba.png").unlink()
    data = (out / "p2_alpha.png").read_bytes()
    (out / "p2_alpha.png").write_bytes(data[: len(data) // 2])
    leftover = out / ".p3_rgba.png.q1w2e3r4.png.part"
    leftover.write_bytes(b"half")

    again = run_cli("infer", tmp_path / "in", "-m", infer_model.xml, "-o", out, "--skip-existing")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert sorted(ln for ln in lines if ": skipped" in ln) == sorted(
        f"{photos[i]}: skipped, outputs present and whole" for i in (0, 3)
    )
    assert sorted(ln.split(" -> ")[0] for ln in lines if " -> " in ln) == [
        str(photos[1]),
        str(photos[2]),
    ]
    assert "(2 skipped: already done)" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reference  # whole again
    for name in ("p0_alpha.png", "p0_rgba.png", "p3_alpha.png", "p3_rgba.png"):
        assert os.stat(out / name).st_ino == inode[name], name  # not rewritten
    assert not leftover.exists()


def test_skip_existing_considers_every_requested_output(
    run_cli: RunCli,
    infer_model: InferModel,
    tmp_path: Path,
    astronaut_bgr: npt.NDArray[np.uint8],
) -> None:
    """Outputs of a run without --background do not count as done for a run that asks for
    a composite: the input is redone."""
    _photos(tmp_path / "in", astronaut_bgr, 1)
    out = tmp_path / "out"
    assert run_cli("infer", tmp_path / "in", "-m", infer_model.xml, "-o", out).returncode == 0
    again = run_cli(
        "infer", tmp_path / "in", "-m", infer_model.xml, "-o", out, "-b", "green", "--skip-existing"
    )
    assert again.returncode == 0, again.stderr
    assert "skipped" not in again.stdout
    assert (out / "p0_composite.jpg").is_file()


def test_skip_existing_never_takes_another_inputs_results_as_done(
    run_cli: RunCli,
    infer_model: InferModel,
    tmp_path: Path,
    astronaut_bgr: npt.NDArray[np.uint8],
) -> None:
    """Names are planned per run: ``a.jpg`` gets ``a_*``, ``a.png`` ``a-2_*``; once ``a.jpg``
    is gone, ``a.png`` is planned ``a_*``, which hold a.jpg's results: they must be redone."""
    src = tmp_path / "in"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.png"), astronaut_bgr[:300, :280])
    assert cv2.imwrite(str(src / "a.jpg"), astronaut_bgr[:100, :100])
    out = tmp_path / "out"
    first = run_cli("infer", src, "-m", infer_model.xml, "-o", out)
    assert first.returncode == 0, first.stderr
    (src / "a.jpg").unlink()
    again = run_cli("infer", src, "-m", infer_model.xml, "-o", out, "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert ": skipped" not in again.stdout
    matte = cv2.imread(str(out / "a_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert matte.shape[:2] == (300, 280)  # a.png's own matte now, not a.jpg's 100x100


def test_a_users_own_file_named_like_a_result_is_never_overwritten(
    run_cli: RunCli,
    infer_model: InferModel,
    tmp_path: Path,
    astronaut_bgr: npt.NDArray[np.uint8],
) -> None:
    """``a_alpha.png`` beside ``a.jpg`` may be the user's own photo: without this tool's mark
    it is refused in one line for that input, kept byte for byte; our own results are
    replaced on a rerun as before."""
    src = tmp_path / "in"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.jpg"), astronaut_bgr[:120, :100])
    assert cv2.imwrite(str(src / "b.jpg"), astronaut_bgr[:100, :120])
    assert cv2.imwrite(str(src / "a_alpha.png"), astronaut_bgr[:40, :40])
    user_bytes = (src / "a_alpha.png").read_bytes()
    proc = run_cli("infer", src, "-m", infer_model.xml, "-o", src)
    assert proc.returncode == 1
    assert "a_alpha.png: exists and was not written by modnet-tools" in proc.stderr
    assert (src / "a_alpha.png").read_bytes() == user_bytes
    assert (src / "b_alpha.png").is_file()  # the other input still ran
    again = run_cli("infer", src / "b.jpg", "-m", infer_model.xml, "-o", src)
    assert again.returncode == 0, again.stderr  # its own earlier result: replaced
