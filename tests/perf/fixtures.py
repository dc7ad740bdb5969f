"""Fixtures for the performance area: a small real model tree for quantize and benchmark.

Quantization and benchmarking cost time in proportion to the network's input size, so the
fast tests use the tame random checkpoint converted at 1x3x128x128 (16x cheaper than 512x512,
same graph): FP32 and FP16 IRs, the ONNX and the checkpoint, laid out under a model root as
``download`` and ``convert`` write them. The INT8 IR is made once per session with the real
``quantize_ir`` on three calibration images.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

WEBCAM = "modnet-webcam-portrait-matting"
SMALL_SHAPE = (1, 3, 128, 128)


@dataclass(frozen=True)
class PerfModel:
    """A model root with ``public/<name>/{FP32,FP16}/<name>.xml``, the ONNX and the checkpoint."""

    root: Path
    name: str
    fp32: Path
    fp16: Path
    onnx: Path
    checkpoint: Path


@pytest.fixture(scope="session")
def perf_model(tame_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> PerfModel:
    from toolkit.convert.pipeline import convert_checkpoint

    root = tmp_path_factory.mktemp("perf_root")
    folder = root / "public" / WEBCAM
    onnx = folder / "modnet_webcam_portrait_matting.onnx"
    irs = {
        precision: convert_checkpoint(
            tame_checkpoint,
            folder / precision / f"{WEBCAM}.xml",
            precision=precision,
            input_shape=SMALL_SHAPE,
            onnx_path=onnx,
        )
        for precision in ("FP32", "FP16")
    }
    checkpoint = folder / "modnet_webcam_portrait_matting.ckpt"
    shutil.copyfile(tame_checkpoint, checkpoint)
    return PerfModel(root, WEBCAM, irs["FP32"], irs["FP16"], onnx, checkpoint)


@pytest.fixture(scope="session")
def perf_int8(perf_model: PerfModel):  # type: ignore[no-untyped-def]
    """``quantize_ir`` on the small FP32 IR, three generated calibration images, into the
    model root (so benchmark and ``infer --fast`` find it); returns the QuantizeResult."""
    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.quantize import quantize_model

    return quantize_model(
        perf_model.root, perf_model.name, subset_size=3, holdout=holdout_set(2, size=128)
    )
