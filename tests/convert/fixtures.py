"""Session fixtures for the convert area: real exports and real IRs from random checkpoints.

Built once per test session with the public API (:func:`toolkit.convert.pipeline.convert_checkpoint`),
so every test that needs an IR shares the same few seconds of conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

WEBCAM = "modnet-webcam-portrait-matting"


@dataclass(frozen=True)
class Converted:
    """One checkpoint converted the way ``modnet-tools convert`` lays it out."""

    checkpoint: Path
    root: Path
    onnx: Path
    fp32: Path
    fp16: Path


def _convert(checkpoint: Path, root: Path) -> Converted:
    from toolkit.convert.pipeline import convert_checkpoint

    conv_dir = root / "public" / WEBCAM
    onnx = conv_dir / "modnet_webcam_portrait_matting.onnx"
    fp32 = convert_checkpoint(
        checkpoint, conv_dir / "FP32" / f"{WEBCAM}.xml", precision="FP32", onnx_path=onnx
    )
    fp16 = convert_checkpoint(
        checkpoint, conv_dir / "FP16" / f"{WEBCAM}.xml", precision="FP16", onnx_path=onnx
    )
    return Converted(checkpoint, root, onnx, fp32, fp16)


@pytest.fixture(scope="session")
def converted_touchy(
    touchy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    """The touchy checkpoint as ONNX + FP32 + FP16 IR (1x3x512x512, OMZ preprocessing)."""
    return _convert(touchy_checkpoint, tmp_path_factory.mktemp("converted_touchy"))


@pytest.fixture(scope="session")
def converted_tame(tame_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """The tame checkpoint as ONNX + FP32 + FP16 IR (for reduced-precision drift checks)."""
    return _convert(tame_checkpoint, tmp_path_factory.mktemp("converted_tame"))


@pytest.fixture(scope="session")
def photo_bgr(sample_photo: Path):  # type: ignore[no-untyped-def]
    """The sample photo as OpenCV reads it (BGR uint8, 512x512)."""
    import cv2

    image = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    assert image is not None
    return image
