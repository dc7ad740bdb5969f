"""Video reading and writing with PyAV: codecs, exact sizes, timestamps, rotation, audio,
atomic outputs. Every check decodes a real file back."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.matting.fixtures import write_video
from tests.matting.media import VFR_MS, astronaut_frames, audio_seconds, make_video, probe
from toolkit.errors import UsageError
from toolkit.matting.camera import CameraReader
from toolkit.matting.images import InputError
from toolkit.matting.prepost import parse_background
from toolkit.matting.video import VideoReader, open_clip
from toolkit.matting.videowriter import (
    CODECS,
    RGBA_FORMATS,
    Encoding,
    PngSequenceWriter,
    VideoWriteError,
    VideoWriter,
    check_crf,
    check_sequence_folder,
    container_extension,
    parse_codec,
    plan_encoding,
)

MS = Fraction(1, 1000)


def _transcode(source: Path, dest: Path, codec: str, **kwargs: object) -> list[str]:
    """Read ``source`` and write its frames to ``dest`` with ``codec``; return the notes."""
    with VideoReader(source, decode_audio=True) as reader:
        encoding = plan_encoding(CODECS[codec], CODECS[codec].crf, reader.width, reader.height)
        with VideoWriter(
            dest,
            width=reader.width,
            height=reader.height,
            encoding=encoding,
            time_base=reader.time_base,
            rate=reader.rate,
            audio=reader.audio_stream,
            **kwargs,  # type: ignore[arg-type]
        ) as writer:
            for timed in reader.frames():
                writer.write(timed.image, timed.pts, timed.audio)
    return [encoding.note] if encoding.note else []


@pytest.mark.parametrize(
    ("codec", "ext", "pix_fmt"),
    [
        ("h264", ".mp4", "yuv444p"),  # odd size: 4:2:0 cannot hold it
        ("hevc", ".mkv", "yuv444p"),
        ("vp9", ".webm", "yuv420p"),  # VP9 holds odd sizes in 4:2:0
        ("ffv1", ".mkv", "bgr0"),
    ],
)
def test_each_codec_keeps_exact_odd_size_every_frame_and_its_time(
    tmp_path: Path, codec: str, ext: str, pix_fmt: str
) -> None:
    source = make_video(tmp_path / "vfr.mp4", VFR_MS, MS, 161, 97, audio=None)
    dest = tmp_path / f"out{ext}"
    notes = _transcode(source, dest, codec)
    got, original = probe(dest), probe(source)
    assert (got.codec, got.pix_fmt, got.width, got.height) == (codec, pix_fmt, 161, 97)
    assert got.times == pytest.approx(original.times, abs=1e-3)  # matroska counts in ms
    assert len(got.images) == len(VFR_MS)
    error = np.abs(got.images[4].astype(int) - original.images[4].astype(int)).mean()
    assert error < (0.01 if codec == "ffv1" else 6.0), error  # the same picture (FFV1: exact)
    assert bool(notes) == (pix_fmt == "yuv444p")  # an odd side is said, never cropped
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, dest.name])


def test_even_h264_is_yuv420p_for_browsers(tmp_path: Path) -> None:
    source = make_video(tmp_path / "even.mp4", (0, 1, 2), Fraction(1, 25), 160, 96, audio=None)
    assert _transcode(source, tmp_path / "out.mp4", "h264") == []
    got = probe(tmp_path / "out.mp4")
    assert (got.codec, got.pix_fmt, got.width, got.height) == ("h264", "yuv420p", 160, 96)


def test_a_0_3_fps_clip_keeps_its_pace(tmp_path: Path) -> None:
    slow = Fraction(10, 3)  # one frame every 3.33 s
    source = make_video(tmp_path / "slow.mp4", (0, 1, 2, 3), slow, 96, 64, audio=None)
    _transcode(source, tmp_path / "out.mp4", "h264")
    assert probe(tmp_path / "out.mp4").times == pytest.approx([0, 10 / 3, 20 / 3, 10], abs=1e-3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    frames = astronaut_frames(2, 96, 64)
    source = make_video(
        tmp_path / "r.mp4", (0, 1), Fraction(1, 25), 96, 64, audio=None, rotation=rotation,
        frames=frames,
    )  # fmt: skip
    with VideoReader(source) as reader:
        first = next(iter(reader))
        assert (reader.width, reader.height) == ((64, 96) if rotation % 180 else (96, 64))
    upright = np.rot90(frames[0], rotation // 90)  # counter-clockwise, as players turn it
    wrong = np.rot90(frames[0], rotation // 90 + 2)  # the same shape, turned the other way
    assert first.shape == upright.shape
    error = np.abs(first.astype(int) - upright.astype(int)).mean()
    assert error < 6 < np.abs(first.astype(int) - wrong.astype(int)).mean()


def test_max_pixels_refuses_before_decoding(tmp_path: Path) -> None:
    source = make_video(tmp_path / "big.mp4", (0, 1), Fraction(1, 25), 160, 96, audio=None)
    with pytest.raises(InputError, match=r"160x96 are 15,360 pixels, over the limit of 10,000"):
        VideoReader(source, max_pixels=10_000)


@pytest.mark.parametrize(
    ("source_audio", "ext", "codec"),
    [
        ("aac", ".mp4", "aac"),  # copied
        ("aac", ".mkv", "aac"),
        ("aac", ".webm", "opus"),  # WebM holds Opus and Vorbis only
        ("pcm_s16le", ".mp4", "aac"),  # PCM: MOV's, not MP4's
    ],
)
def test_audio_is_copied_or_reencoded_at_full_length(
    tmp_path: Path, source_audio: str, ext: str, codec: str
) -> None:
    source = make_video(tmp_path / "a.mov", VFR_MS, MS, 96, 64, audio=source_audio)
    _transcode(source, tmp_path / f"out{ext}", "vp9" if ext == ".webm" else "h264")
    got_codec, got = audio_seconds(tmp_path / f"out{ext}")
    _, expected = audio_seconds(source)
    assert got_codec == codec  # AAC copied where it fits, Opus for WebM
    assert got == pytest.approx(expected, abs=0.03)  # within one audio frame


def test_audio_copy_is_bit_exact(tmp_path: Path) -> None:
    source = make_video(tmp_path / "a.mp4", VFR_MS, MS, 96, 64)
    _transcode(source, tmp_path / "out.mov", "h264")

    def packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(audio=0) if p.size]

    assert packets(tmp_path / "out.mov") == packets(source)


@pytest.mark.parametrize("fmt", ["webm", "mov"])
def test_rgba_video_keeps_the_alpha(tmp_path: Path, fmt: str) -> None:
    codec = RGBA_FORMATS[fmt]
    frames = astronaut_frames(3, 97, 65)
    ramp = np.tile(np.linspace(0, 255, 97).astype(np.uint8), (65, 1))
    dest = tmp_path / f"cut.{fmt}"
    encoding = plan_encoding(codec, codec.crf, 97, 65)
    with VideoWriter(
        dest, width=97, height=65, encoding=encoding, time_base=Fraction(1, 25), kind="bgra"
    ) as writer:
        for i, frame in enumerate(frames):
            writer.write(np.dstack([frame, ramp]), i)
    got = probe(dest)
    assert (got.width, got.height, len(got.alphas)) == (97, 65, 3)
    assert got.pix_fmt.startswith("yuva")
    diff = np.abs(got.alphas[1].astype(int) - ramp.astype(int))
    assert diff.mean() < (0.5 if fmt == "mov" else 2.0), diff.mean()  # ProRes: 10-bit rounding


def test_png_sequence_is_published_whole(tmp_path: Path) -> None:
    dest = tmp_path / "seq"
    dest.mkdir()
    import cv2

    from toolkit.matting.marker import mark_encoded

    user_png = cv2.imencode(".png", np.full((8, 8, 3), 7, np.uint8))[1].tobytes()
    (dest / "000001.png").write_bytes(user_png)  # a user's own frame, unmarked
    with pytest.raises(UsageError, match="not PNG frames"):
        check_sequence_folder(dest)  # a frame name alone does not make it ours
    earlier = mark_encoded(".png", user_png)
    (dest / "000001.png").write_bytes(earlier)
    check_sequence_folder(dest)  # an earlier run's (marked) frames: ours to replace
    with pytest.raises(RuntimeError), PngSequenceWriter(dest) as writer:
        writer.write(np.zeros((32, 32, 4), np.uint8))
        raise RuntimeError("interrupted")
    assert [p.name for p in dest.iterdir()] == ["000001.png"]  # the earlier folder untouched
    assert (dest / "000001.png").read_bytes() == earlier
    with PngSequenceWriter(dest) as writer:
        for _ in range(3):
            writer.write(np.zeros((32, 32, 4), np.uint8))
    assert sorted(p.name for p in dest.iterdir()) == ["000001.png", "000002.png", "000003.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # no temporary folders
    (dest / "notes.txt").write_text("a user's file")
    with pytest.raises(UsageError, match="not PNG frames"):
        check_sequence_folder(dest)  # never replaced: it holds something else
    with pytest.raises(UsageError, match="not a folder"):
        check_sequence_folder(dest / "notes.txt")


def test_a_writer_that_cannot_open_publishes_nothing_and_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"an earlier good result")
    bad = Encoding(CODECS["h264"], 18, "yuv420p")  # 4:2:0 at an odd size: x264 refuses
    with (
        pytest.raises(VideoWriteError, match="h264 encoder cannot write 97x65 yuv420p"),
        VideoWriter(dest, width=97, height=65, encoding=bad, time_base=Fraction(1, 25)),
    ):
        pass
    assert dest.read_bytes() == b"an earlier good result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_failed_write_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "broken.mp4"
    encoding = plan_encoding(CODECS["h264"], 18, 96, 64)
    writer = VideoWriter(dest, width=96, height=64, encoding=encoding, time_base=MS)
    with contextlib.suppress(RuntimeError), writer:
        writer.write(np.zeros((64, 96, 3), np.uint8), 0)
        raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []
    writer = VideoWriter(dest, width=96, height=64, encoding=encoding, time_base=MS)
    with pytest.raises(ValueError, match="expected"), writer:  # a wrong size is a bug: refused
        writer.write(np.zeros((10, 10, 3), np.uint8), 0)
    assert list(tmp_path.iterdir()) == []


def test_max_frames_bounds_the_read_and_the_audio(tmp_path: Path) -> None:
    source = make_video(tmp_path / "a.mp4", VFR_MS, MS, 96, 64)
    with VideoReader(source, max_frames=4) as reader:
        frames = list(reader.frames())
    assert len(frames) == 4
    end = 0.25  # frame 4 (at 0.13 s) lasts until frame 5 (0.25 s)
    audio = [p for f in frames for p in f.audio if p.data]
    assert audio and all(p.seconds is not None and p.seconds < end for p in audio)
    assert max(p.seconds or 0 for p in audio) > end - 0.05  # and reaches the end


def test_old_style_avi_inputs_still_read(tmp_path: Path) -> None:
    frames = [np.full((64, 96, 3), 20 * i, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "clip.avi", frames, fps=12.0)
    with VideoReader(path) as reader:
        got = list(reader)
        assert (reader.width, reader.height, reader.fps) == (96, 64, pytest.approx(12.0))
    assert len(got) == 6 and abs(int(got[5].mean()) - 100) <= 4


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
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_tiny_videos_are_refused(tmp_path: Path) -> None:
    path = make_video(tmp_path / "tiny.mp4", (0, 1), Fraction(1, 25), 16, 16, audio=None)
    with pytest.raises(InputError, match="too small"):
        VideoReader(path)


def test_a_background_clip_loops_with_time_running_on(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "bg.mp4", (0, 1, 2), Fraction(1, 10), 64, 64, audio=None)
    frames = open_clip(clip)()
    times = [next(frames)[0] for _ in range(7)]
    frames.close()
    assert times == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])


def test_codec_container_and_crf_rules() -> None:
    h264, vp9, ffv1 = CODECS["h264"], CODECS["vp9"], CODECS["ffv1"]
    assert parse_codec("H265") is CODECS["hevc"]
    assert container_extension(h264, None, Path("a.MOV")) == ".mov"
    assert container_extension(h264, None, Path("a.avi")) == ".mp4"  # avi: not written
    assert container_extension(h264, None, Path("a.webm")) == ".mp4"  # webm cannot hold h264
    assert container_extension(vp9, None, Path("a.webm")) == ".webm"
    assert container_extension(vp9, None, Path("a.avi")) == ".mp4"  # else MP4, as asked
    assert container_extension(ffv1, None, None) == ".mkv"
    assert container_extension(h264, "MKV", None) == ".mkv"
    assert check_crf(h264, None) == 18 and check_crf(vp9, 40) == 40
    for call in (
        lambda: parse_codec("mpeg2"),
        lambda: container_extension(h264, "webm", None),
        lambda: container_extension(h264, "avi", None),
        lambda: check_crf(h264, 60),
        lambda: check_crf(ffv1, 10),
    ):
        with pytest.raises(UsageError):
            call()


def test_a_missing_camera_is_one_clear_line() -> None:
    with pytest.raises(InputError, match="camera 57: cannot open this camera"):
        CameraReader(57)


def test_a_video_background_behind_a_still_image_is_its_first_frame(tmp_path: Path) -> None:
    frames = [np.full((60, 80, 3), c, np.uint8) for c in (40, 120, 200)]
    clip = make_video(
        tmp_path / "bg.mp4", (0, 1, 2), Fraction(1, 10), 80, 60, audio=None, frames=frames
    )
    background = parse_background(str(clip), load_clip=open_clip)
    rendered = background.render(np.zeros((30, 40, 3), np.uint8))
    assert rendered.shape == (30, 40, 3) and abs(float(rendered.mean()) - 40) < 3
    player = background.player()  # a stream sees the clip play, then loop
    means = [float(player.render(rendered, t).mean()) for t in (0.0, 0.1, 0.2, 0.3, 0.45)]
    player.close()
    assert [round(m / 40) for m in means] == [1, 3, 5, 1, 3]
