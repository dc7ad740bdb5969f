"""Fixtures for the cluster area: a small archive (photos and a video) and a local reference.

The reference is a plain local ``modnet-tools infer`` of the same inputs with the same IR; the
cluster tests compare every byte a Ray run writes against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.matting.fixtures import InferModel, portrait_frames, write_video

#: Photos in the archive: enough that a run lasts long enough to be damaged mid-way.
PHOTOS = 16
VIDEO_FRAMES = 16


@dataclass(frozen=True)
class Archive:
    """``folder`` holds the photos and the video; ``broken`` is a truncated JPEG outside it."""

    folder: Path
    photos: list[Path]
    video: Path
    broken: Path


@dataclass(frozen=True)
class LocalRun:
    out: Path
    proc: subprocess.CompletedProcess[str]


def cli(*args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="session")
def archive(
    tmp_path_factory: pytest.TempPathFactory, astronaut_bgr: npt.NDArray[np.uint8]
) -> Archive:
    root = tmp_path_factory.mktemp("archive")
    folder = root / "shoot"
    folder.mkdir()
    photos = []
    for i in range(PHOTOS):  # different crops and sizes, as an archive has
        crop = astronaut_bgr[3 * i : 3 * i + 420, 2 * i : 2 * i + 360 + 4 * i]
        path = folder / f"photo{i:03d}.jpg"
        assert cv2.imwrite(str(path), crop)
        photos.append(path)
    video = write_video(
        folder / "interview.avi", portrait_frames(astronaut_bgr, VIDEO_FRAMES, 320, 240)
    )
    broken = root / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:900])  # cut short: fails on its own merits
    return Archive(folder, photos, video, broken)


@pytest.fixture(scope="session")
def local_reference(
    archive: Archive, infer_model: InferModel, tmp_path_factory: pytest.TempPathFactory
) -> LocalRun:
    """A local ``infer`` of the archive and the broken photo."""
    work = tmp_path_factory.mktemp("local_reference")
    proc = cli(
        "infer", archive.folder, archive.broken, "-m", infer_model.xml, "-o", "out", cwd=work
    )
    assert proc.returncode == 1, proc.stderr  # the broken photo fails, alone
    return LocalRun(work / "out", proc)


def copy_archive(archive: Archive, dest: Path) -> Path:
    shutil.copytree(archive.folder, dest)
    return dest
