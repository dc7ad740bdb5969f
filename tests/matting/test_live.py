"""Live mode and the network size: the newest frame is matted, the rest dropped, in order.

The source is a generated video read as a live camera (released at its frame rate, 120
frames/s, far faster than the network), through the real ``infer`` command and the real IR.
Each frame carries its index in black and white blocks, read back from the side-by-side output
(whose left half is the input frame), so order and drops are checked on the written video.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.conftest import RunCli
from tests.matting.fixtures import InferModel, write_video
from tests.matting.media import probe
from toolkit.matting.live import LatestFrame
from toolkit.matting.session import MattingSession

BITS, BLOCK = 7, 32


def _indexed_frames(count: int, width: int = 320, height: int = 192) -> list[npt.NDArray[np.uint8]]:
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 90, np.uint8)
        cv2.circle(frame, (width // 2, height // 2 + 30), 50, (60, 120, 200), -1)  # a "face"
        for bit in range(BITS):
            value = 255 if (i >> bit) & 1 else 0
            frame[:BLOCK, bit * BLOCK + 8 : (bit + 1) * BLOCK + 8] = value
        frames.append(frame)
    return frames


def _index_of(frame: npt.NDArray[np.uint8]) -> int:
    value = 0
    for bit in range(BITS):
        block = frame[4 : BLOCK - 4, bit * BLOCK + 12 : (bit + 1) * BLOCK + 4]
        value |= int(block.mean() > 128) << bit
    return value


def _read(path: Path) -> list[npt.NDArray[np.uint8]]:
    return probe(path).images


def test_latest_frame_drops_what_arrives_while_busy_and_keeps_order() -> None:
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(60)]
    source = LatestFrame(iter(frames), fps=200.0)  # 5 ms apart
    seen = []
    for frame in source:
        time.sleep(0.03)  # a consumer six times slower than the source
        seen.append(frame.index)
        assert int(frame.image[0, 0, 0]) == frame.index
        source.done(frame)
    stats = source.stats
    assert stats.arrived == 60 and stats.dropped > 30
    assert stats.processed + stats.dropped == stats.arrived == 60
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 59  # the newest frame is never the one dropped at the end
    # Never queued: each output was at most about one consumer step old (a queue of 60
    # frames behind a 30 ms consumer would reach 1.5 s).
    assert max(stats.latencies_ms) < 500


def test_live_video_read_as_a_camera_drops_frames_in_order_with_bounded_latency(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    clip = write_video(tmp_path / "live.avi", _indexed_frames(90), fps=120.0)
    out = tmp_path / "out"
    proc = run_cli(
        "infer", clip, "--live", "-o", out, "--model-root", infer_model.root,
        "-b", "white", "--side-by-side", "--no-alpha", "--network-size", "256x256",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    match = re.search(
        r"live: (\d+) of (\d+) frames matted, (\d+) dropped while busy; "
        r"latency median (\d+) ms, max (\d+) ms",
        proc.stderr,
    )
    assert match, proc.stderr
    matted, arrived, dropped, median, worst = map(int, match.groups())
    assert arrived == 90 and matted + dropped == 90
    assert dropped > 0 and matted >= 2  # the source is faster than the network
    side = _read(out / "live_side.mp4")
    assert len(side) == matted == len(_read(out / "live_composite.mp4"))
    indices = [_index_of(frame[:, :320]) for frame in side]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)  # nothing out of order
    assert indices[-1] == 89  # the last frame the camera gave is matted
    # Bounded: the 90 frames last 0.75 s; queued behind the network the last one would wait
    # for every earlier frame (matted * per-frame time); dropped, each waits for one at most.
    assert worst <= 4 * median + 1000, proc.stderr


def test_network_size_runs_the_reshaped_ir_and_resizes_the_matte_back(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8]
) -> None:
    frame = cv2.resize(astronaut_bgr, (640, 360))
    small = MattingSession.from_xml(infer_model.xml, network_size=(192, 320))
    full = MattingSession.from_xml(infer_model.xml)
    assert small.network_size(360, 640) == (192, 320)
    assert small.preprocess(frame).shape == (1, 3, 192, 320)
    a, b = small.matte(frame), full.matte(frame)
    assert a.shape == b.shape == (360, 640)
    # The same network at another size: a different but related matte.
    assert 0 < float(np.abs(a - b).mean()) < 0.2


@pytest.mark.parametrize("value", ["300x200", "320", "0x0", "320x-32", "8192x8192", "axb"])
def test_bad_network_sizes_are_usage_errors(run_cli: RunCli, tmp_path: Path, value: str) -> None:
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    proc = run_cli("infer", photo, "--network-size", value, "-o", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert "--network-size" in proc.stderr and "Traceback" not in proc.stderr


def test_live_with_ofd_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    proc = run_cli("infer", photo, "--live", "--ofd", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "--live" in proc.stderr
