"""Fixtures for ``evaluate``: a tiny HumanMatting-style dataset and tiny OpenVINO IRs.

Every number the evaluate tests expect is worked out by hand from what is built here, so the
dataset is made of pixels whose decoded values are exact (uniform grey JPEGs decode exactly)
and of mattes whose 512x512 resize is known in closed form:

* ``a``: grey-128 400x300 JPEG; RGBA 1024x1024 matte whose alpha is 255 on odd columns and
  0 on even ones. Pillow's nearest neighbour samples pixel centres (source column 2x+1):
  ground truth 255 everywhere. OpenCV's INTER_NEAREST takes column 2x: 0 everywhere.
* ``b``: grey-64 200x300 JPEG; single-channel 3x3 matte with columns 0, 100, 200. Pillow maps
  output column x to source floor((x + 0.5) * 3 / 512): 171, 170 and 171 output columns
  (OpenCV, floor(x * 3 / 512): 171, 171, 170).
* ``c``: a JPEG without a matte; ``d``: a corrupt JPEG with a good matte; ``e``: a good JPEG
  with a corrupt matte; ``f.png``: a matte without an image (ignored).

The IRs: ``const_ir`` outputs 0.999 everywhere (uint8(trunc(0.999 * 255)) = 254, where
rounding would give 255); ``blue_ir`` outputs the first input channel (B in BGR) / 256, so
grey 128 gives 0.5 -> 127.5 -> 127 (rounding: 128) and grey 64 gives 63.75 -> 63.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

GREY_A, GREY_B = 128, 64


def write_grey_jpeg(path: Path, value: int, width: int, height: int) -> None:
    image = np.full((height, width, 3), value, np.uint8)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


def stripe_matte_rgba(path: Path) -> None:
    """1024x1024 RGBA; alpha 255 on odd columns, 0 on even ones; colour channels noise."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1024, 1024, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[:, 1::2, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(path)


def three_column_matte(path: Path) -> None:
    """3x3 single-channel matte, columns 0, 100, 200."""
    grey = np.array([[0, 100, 200]] * 3, np.uint8)
    Image.fromarray(grey, mode="L").save(path)


def build_dataset(folder: Path) -> Path:
    """Images and mattes in one folder (HumanMatting's layout); see the module docstring."""
    folder.mkdir(parents=True, exist_ok=True)
    write_grey_jpeg(folder / "a.jpg", GREY_A, 400, 300)
    stripe_matte_rgba(folder / "a.png")
    write_grey_jpeg(folder / "b.jpg", GREY_B, 200, 300)
    three_column_matte(folder / "b.png")
    write_grey_jpeg(folder / "c.jpg", 90, 64, 64)
    (folder / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    three_column_matte(folder / "d.png")
    write_grey_jpeg(folder / "e.jpg", 90, 64, 64)
    (folder / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    three_column_matte(folder / "f.png")
    return folder


@pytest.fixture
def matting_dataset(tmp_path: Path) -> Path:
    return build_dataset(tmp_path / "dataset")


def _save(model: object, path: Path) -> Path:
    import openvino as ov

    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def build_const_ir(path: Path, value: float = 0.999) -> Path:
    """An IR with MODNet's interface whose matte is ``value`` everywhere."""
    import openvino as ov
    import openvino.opset13 as ops

    inp = ops.parameter([1, 3, 512, 512], np.float32, name="input")
    first = ops.slice(inp, np.array([0]), np.array([1]), np.array([1]), np.array([1]))
    out = ops.add(ops.multiply(first, np.float32(0.0)), np.float32(value))
    out.output(0).get_tensor().set_names({"output"})
    return _save(ov.Model([out], [inp], "const"), path)


def build_blue_ir(path: Path) -> Path:
    """An IR with MODNet's interface whose matte is input channel 0 (B of BGR) / 256."""
    import openvino as ov
    import openvino.opset13 as ops

    inp = ops.parameter([1, 3, 512, 512], np.float32, name="input")
    first = ops.slice(inp, np.array([0]), np.array([1]), np.array([1]), np.array([1]))
    out = ops.multiply(first, np.float32(1 / 256))
    out.output(0).get_tensor().set_names({"output"})
    return _save(ov.Model([out], [inp], "blue"), path)


@pytest.fixture(scope="session")
def const_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_const_ir(tmp_path_factory.mktemp("ir") / "const.xml")


@pytest.fixture(scope="session")
def blue_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blue_ir(tmp_path_factory.mktemp("ir") / "blue.xml")
