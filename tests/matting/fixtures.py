"""Fixtures for the infer area: a real converted IR, a session on it, real media files.

The IR is the tame random checkpoint converted by :func:`toolkit.convert.pipeline.convert_checkpoint`
(through the convert area's ``converted_tame`` session fixture, so the conversion runs once per
test session), laid out under a model root exactly as ``modnet-tools convert`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

WEBCAM = "modnet-webcam-portrait-matting"


@dataclass(frozen=True)
class InferModel:
    """A converted model as infer finds it: ``root/public/<name>/<PREC>/<name>.xml``."""

    root: Path
    xml: Path
    checkpoint: Path
    onnx: Path


@pytest.fixture(scope="session")
def infer_model(converted_tame) -> InferModel:  # type: ignore[no-untyped-def]
    """The tame checkpoint converted to a 1x3x512x512 FP32 IR (plus its ONNX and FP16 IR)."""
    return InferModel(
        converted_tame.root, converted_tame.fp32, converted_tame.checkpoint, converted_tame.onnx
    )


@pytest.fixture(scope="session")
def dynamic_ir(tame_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tame checkpoint as an IR with dynamic H and W (``input_shape=None``)."""
    from toolkit.convert.pipeline import convert_checkpoint

    root = tmp_path_factory.mktemp("dynamic_ir")
    return convert_checkpoint(
        tame_checkpoint, root / "public" / WEBCAM / "FP32" / f"{WEBCAM}.xml", input_shape=None
    )


@pytest.fixture(scope="session")
def infer_session(infer_model: InferModel):  # type: ignore[no-untyped-def]
    """A stretch-mode, f32 session on the FP32 IR, shared by the tests that only read it."""
    from toolkit.matting.session import MattingSession

    return MattingSession.from_xml(infer_model.xml)


@pytest.fixture(scope="session")
def astronaut_bgr(sample_photo: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def portrait_frames(
    base: npt.NDArray[np.uint8], count: int, width: int, height: int
) -> list[npt.NDArray[np.uint8]]:
    """``count`` frames of a slowly panning crop of ``base`` at ``width`` x ``height``."""
    frames = []
    for i in range(count):
        shift = 4 * i
        crop = base[shift : shift + 400, shift : shift + 400]
        frames.append(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    return frames


def write_video(
    path: Path, frames: list[npt.NDArray[np.uint8]], fps: float = 10.0, fourcc: str = "MJPG"
) -> Path:
    """A real video file (MJPG in AVI keeps every frame, unlike inter-frame codecs' delays)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def sample_video(tmp_path: Path, astronaut_bgr: npt.NDArray[np.uint8]) -> Path:
    """An 8-frame 320x192 AVI of the astronaut, panning."""
    return write_video(tmp_path / "clip.avi", portrait_frames(astronaut_bgr, 8, 320, 192))
