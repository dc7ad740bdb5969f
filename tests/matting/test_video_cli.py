"""``modnet-tools infer`` on video, end to end: every output decoded back with PyAV and checked
for codec, pixel format, exact size, frame count, each frame's time, audio, alpha, and the
matte against the image path's matte of the same frame."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.conftest import RunCli
from tests.matting.fixtures import InferModel
from tests.matting.media import VFR_MS, audio_seconds, make_video, probe
from toolkit.matting.batch import InferOptions, run_infer, run_video_file
from toolkit.matting.images import expand_inputs
from toolkit.matting.prepost import composite, parse_background, quantize_alpha
from toolkit.matting.session import MattingSession

MS = Fraction(1, 1000)
U8 = npt.NDArray[np.uint8]


def _mattes(session: MattingSession, frames: list[U8]) -> list[U8]:
    """What the image path writes as ``_alpha.png`` for each frame."""
    return [quantize_alpha(session.matte(frame)) for frame in frames]


def _mean_diff(a: U8, b: U8) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_vfr_odd_sized_video_with_audio_gives_every_output_exactly(
    run_cli: RunCli, infer_model: InferModel, infer_session: MattingSession, tmp_path: Path
) -> None:
    source = make_video(tmp_path / "vfr.mp4", VFR_MS, MS, 641, 361)
    original = probe(source)
    still = tmp_path / "still3.png"  # frame 3 through the image path, in the same run
    cv2.imwrite(str(still), original.images[3])
    out = tmp_path / "out"
    proc = run_cli(
        "infer", source, still, "-o", out, "--model-root", infer_model.root,
        "-b", "omz", "--side-by-side", "--rgba-video", "webm",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "odd side" in proc.stderr and "never" not in proc.stderr  # said in one line
    assert sorted(p.name for p in out.iterdir()) == [
        "still3_alpha.png", "still3_composite.png", "still3_rgba.png", "still3_side.png",
        "vfr_alpha.mp4", "vfr_composite.mp4", "vfr_rgba.webm", "vfr_side.mp4",
    ]  # fmt: skip
    _, input_audio = audio_seconds(source)
    expected = {  # name: (codec, pixel format, width, audio codec)
        "vfr_alpha.mp4": ("h264", "yuvj444p", 641, None),  # the matte: full range, no audio
        "vfr_composite.mp4": ("h264", "yuv444p", 641, "aac"),
        "vfr_side.mp4": ("h264", "yuv444p", 1282, "aac"),
        "vfr_rgba.webm": ("vp9", "yuva420p", 641, "opus"),  # AAC cannot go in WebM
    }
    for name, (codec, pix_fmt, width, audio) in expected.items():
        got = probe(out / name, gray=name == "vfr_alpha.mp4")
        assert (got.codec, got.pix_fmt, got.width, got.height) == (codec, pix_fmt, width, 361)
        assert len(got.images) == len(VFR_MS), name
        assert got.times == pytest.approx(original.times, abs=1e-3), name  # WebM: in ms
        assert got.audio_codec == audio, name
        if audio is not None:
            assert got.audio_seconds == pytest.approx(input_audio, abs=0.03), name

    # The matte video against the image path, frame by frame (2/255 asked; mp4v gave 2.2).
    reference = _mattes(infer_session, original.images)
    png_matte = cv2.imread(str(out / "still3_alpha.png"), cv2.IMREAD_GRAYSCALE)
    assert _mean_diff(png_matte, reference[3]) < 0.5  # the same frame, the same matte
    assert reference[3].std() > 3  # and a matte that varies: the comparison means something
    matte_video = probe(out / "vfr_alpha.mp4", gray=True).images
    assert max(_mean_diff(m, r) for m, r in zip(matte_video, reference, strict=True)) < 2.0
    # The transparent cut-out's alpha against the PNG matte of the same frame.
    cut = probe(out / "vfr_rgba.webm")
    assert len(cut.alphas) == len(VFR_MS)
    assert _mean_diff(cut.alphas[3], png_matte) < 2.0


def test_slow_clip_keeps_its_times_without_audio_and_mov_keeps_alpha(
    run_cli: RunCli, infer_model: InferModel, infer_session: MattingSession, tmp_path: Path
) -> None:
    slow = make_video(tmp_path / "slow.mp4", (0, 1, 2, 3), Fraction(10, 3), 160, 96)  # 0.3 fps
    original = probe(slow)
    out = tmp_path / "out"
    proc = run_cli(
        "infer", slow, "-o", out, "--model-root", infer_model.root,
        "-b", "white", "--rgba-video", "mov", "--no-audio",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "note:" not in proc.stderr  # even sizes: plain yuv420p, nothing to say
    times = [0.0, 10 / 3, 20 / 3, 10.0]
    for name, (codec, pix_fmt) in {
        "slow_alpha.mp4": ("h264", "yuvj420p"),
        "slow_composite.mp4": ("h264", "yuv420p"),
        "slow_rgba.mov": ("prores", "yuva444p12le"),  # ProRes 4444 (FFmpeg decodes 12-bit)
    }.items():
        got = probe(out / name, gray=name.endswith("alpha.mp4"))
        assert (got.codec, got.pix_fmt, got.width, got.height) == (codec, pix_fmt, 160, 96)
        assert got.times == pytest.approx(times, abs=1e-3), name
        assert got.audio_codec is None, name  # --no-audio
    reference = _mattes(infer_session, original.images)
    matte_video = probe(out / "slow_alpha.mp4", gray=True).images
    assert max(_mean_diff(m, r) for m, r in zip(matte_video, reference, strict=True)) < 2.0
    alphas = probe(out / "slow_rgba.mov").alphas
    assert max(_mean_diff(a, r) for a, r in zip(alphas, reference, strict=True)) < 0.6


def _bg_clip(path: Path, colours: list[tuple[int, int, int]]) -> Path:
    frames = [np.full((60, 60, 3), c, np.uint8) for c in colours]
    pts = tuple(range(len(colours)))
    return make_video(path, pts, Fraction(1, 10), 60, 60, audio=None, frames=frames)


def test_a_shorter_video_background_loops_and_png_sequence_is_exact(
    infer_session: MattingSession, tmp_path: Path
) -> None:
    colours = [(0, 0, 230), (0, 230, 0), (230, 0, 0)]  # BGR: red, green, blue at 10 frames/s
    clip = _bg_clip(tmp_path / "bg.mp4", colours)
    source = make_video(tmp_path / "in.mp4", tuple(range(8)), Fraction(1, 10), 192, 108)
    from toolkit.matting.video import open_clip

    background = parse_background(str(clip), load_clip=lambda p: open_clip(p))
    options = InferOptions(
        output_dir=tmp_path / "out", background=background, video_codec="ffv1",
        rgba_video="png", audio=False,
    )  # fmt: skip
    summary = run_infer(infer_session, expand_inputs([str(source)]), options)
    assert not summary.failed, summary.failed[0].error
    frames = probe(source).images
    alphas = probe(tmp_path / "out" / "in_alpha.mkv", gray=True).images  # FFV1: lossless
    comps = probe(tmp_path / "out" / "in_composite.mkv").images
    pngs = sorted((tmp_path / "out" / "in_rgba").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(1, 9)]
    for i in range(8):
        bg = probe(clip).images[i % 3]  # the clip's frame i mod 3: it looped
        wanted = composite(frames[i], alphas[i], cv2.resize(bg, (192, 108)))
        assert _mean_diff(comps[i], wanted) < 1.0, i
        wrong = composite(
            frames[i], alphas[i], cv2.resize(probe(clip).images[(i + 1) % 3], (192, 108))
        )
        assert _mean_diff(comps[i], wrong) > 5, i
        rgba = cv2.imread(str(pngs[i]), cv2.IMREAD_UNCHANGED)
        assert rgba.shape == (108, 192, 4) and np.array_equal(rgba[..., 3], alphas[i])


def test_cover_keeps_a_square_background_square(tmp_path: Path) -> None:
    square = np.full((90, 90, 3), 255, np.uint8)
    cv2.circle(square, (45, 45), 15, (255, 0, 0), -1)  # a blue disc on white
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), square)
    frame = np.zeros((108, 192, 3), np.uint8)  # 16:9

    def disc(fit: str) -> tuple[int, int]:
        bg = parse_background(str(path), lambda p: cv2.imread(str(p)), fit=fit)  # type: ignore[arg-type]
        rendered = bg.render(frame)
        assert rendered.shape == frame.shape
        ys, xs = np.nonzero((rendered[..., 0] > 128) & (rendered[..., 2] < 128))  # not bars
        return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)

    width, height = disc("cover")
    assert abs(width - height) <= 2 and width > 60  # a circle, scaled up to fill the frame
    width, height = disc("contain")
    assert abs(width - height) <= 2  # a circle, whole, with bars
    width, height = disc("stretch")
    assert width > 1.5 * height  # OMZ's demo: an ellipse


def test_a_writer_that_cannot_open_fails_alone_and_keeps_the_earlier_result(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    wide = make_video(
        tmp_path / "wide.mkv", (0, 1), Fraction(1, 25), 16400, 64, audio=None, codec="ffv1"
    )
    out = tmp_path / "out"
    common = ["-o", out, "--model-root", infer_model.root, "--no-rgba"]
    proc = run_cli("infer", wide, *common, "--video-codec", "vp9")  # VP9 takes 16400 wide
    assert proc.returncode == 0, proc.stderr
    earlier = (out / "wide_alpha.mkv").read_bytes()
    proc = run_cli("infer", wide, sample_photo, *common)  # x264 stops at 16384
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 2 and "wide_alpha.mkv: the h264 encoder cannot write 16400x64" in errors[0]
    )
    assert (out / "wide_alpha.mkv").read_bytes() == earlier  # untouched
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_alpha.png", "wide_alpha.mkv"]


def test_max_pixels_applies_to_video_frames(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    clip = make_video(tmp_path / "c.mp4", (0, 1), Fraction(1, 25), 160, 96, audio=None)
    proc = run_cli("infer", clip, "-o", tmp_path / "out", "--model-root", infer_model.root,
                   "--max-pixels", "10000")  # fmt: skip
    assert proc.returncode == 1
    assert "160x96 are 15,360 pixels, over the limit of 10,000" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--video-codec", "mpeg2"], "--video-codec must be one of h264, hevc, vp9, ffv1"),
        (["--video-ext", "webm"], "--video-ext webm cannot hold h264"),
        (["--video-ext", "avi"], "--video-ext must be one of mp4, mkv, mov, webm"),
        (["--crf", "60"], "--crf for h264 must be 0..51"),  # in 0..63, not in h264's range
        (["--video-codec", "ffv1", "--crf", "10"], "lossless"),
        (["--rgba-video", "gif"], "--rgba-video must be one of webm, mov, png"),
        (["--background-fit", "tile"], "--background-fit must be one of cover, contain, stretch"),
    ],
)
def test_bad_video_options_are_usage_errors(
    run_cli: RunCli, tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run_cli("infer", "x.mp4", *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_progress_total_comes_from_the_container(
    infer_session: MattingSession, tmp_path: Path
) -> None:
    """The bar's total (and so its ETA) is the container's frame count, or its duration x
    rate where the container keeps no count (Matroska)."""
    clip = make_video(tmp_path / "c.mkv", tuple(range(6)), Fraction(1, 10), 96, 64, audio=None)

    class Recorder:
        total: int | None = None
        advanced = 0

        def start(self, total_frames: int | None) -> None:
            self.total = total_frames

        def advance(self, frames: int = 1) -> None:
            self.advanced += frames

        def item_done(self, result: object) -> None:
            pass

        def finish(self, summary: object) -> None:
            pass

    recorder = Recorder()
    options = InferOptions(output_dir=tmp_path / "out", max_frames=5)
    summary = run_infer(infer_session, expand_inputs([str(clip)]), options, recorder)
    assert not summary.failed
    assert recorder.total == 5 and recorder.advanced == 5  # 6 in the file, --max-frames 5

    # One video as a function of (input, options), as a Ray task runs it.
    result = run_video_file(infer_session, clip, options, stem="task")
    assert (
        result.ok and result.frames == 5 and result.outputs == [tmp_path / "out" / "task_alpha.mkv"]
    )
    assert len(probe(result.outputs[0], gray=True).images) == 5
