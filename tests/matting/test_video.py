"""Video reading and atomic video writing with OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.matting.fixtures import write_video
from toolkit.matting.images import InputError
from toolkit.matting.video import VideoReader, VideoWriter, output_extension


def _frames(count: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    return [np.full((height, width, 3), 20 * i, np.uint8) for i in range(count)]


@pytest.mark.parametrize("ext", [".avi", ".mp4", ".mkv"])
def test_writer_then_reader_keep_every_frame_and_the_size(tmp_path: Path, ext: str) -> None:
    dest = tmp_path / f"out{ext}"
    with VideoWriter(dest, fps=12.0, width=96, height=64) as writer:
        for frame in _frames(9):
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # no temp files left
    with VideoReader(dest) as reader:
        frames = list(reader)
        assert (reader.width, reader.height) == (96, 64)
        assert reader.fps == pytest.approx(12.0)
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)
    assert abs(int(frames[5].mean()) - 100) <= 6  # lossy codecs, but the right frame


def test_a_failed_write_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), VideoWriter(dest, fps=10, width=96, height=64) as writer:
        writer.write(_frames(1)[0])
        raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_size_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="expected"),
        VideoWriter(tmp_path / "x.avi", fps=10, width=96, height=64) as writer,
    ):
        writer.write(np.zeros((10, 10, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_max_frames_bounds_the_read(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", _frames(6))
    with VideoReader(path, max_frames=4) as reader:
        assert len(list(reader)) == 4 and reader.frame_count == 4


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"\x00garbage" * 100, "cannot open"), (None, "no such file")],
)
def test_unreadable_videos_give_one_clear_line(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=needle) as info:
        VideoReader(path)
    assert str(path) in str(info.value)


def test_a_missing_camera_is_one_clear_line() -> None:
    with pytest.raises(InputError, match="camera 57: cannot open this camera"):
        VideoReader(57)


def test_tiny_videos_are_refused(tmp_path: Path) -> None:
    path = write_video(tmp_path / "tiny.avi", _frames(3, width=16, height=16))
    with pytest.raises(InputError, match="too small"):
        VideoReader(path)


def test_output_extension_keeps_writable_containers() -> None:
    assert output_extension(Path("a.avi")) == ".avi"
    assert output_extension(Path("a.MOV")) == ".mov"
    assert output_extension(Path("a.webm")) == ".mp4"
    assert output_extension(None) == ".mp4"
