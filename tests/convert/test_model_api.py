"""Real clients of the IR: OpenVINO Model API runs it with no configuration, and an IR made from
random weights says so (in its rt_info, and through ``infer``) - issue 11, items 17 and 19."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from tests.conftest import RunCli
from tests.convert.fixtures import Converted

#: The last Model API release with a portrait-matting wrapper, and what it needs.
MODEL_API_PINS = ("openvino==2024.6.0", "numpy<2", "openvino-model-api==0.2.5.2")
MODEL_API_VENV = Path(
    os.environ.get("MODNET_TOOLS_MODEL_API_VENV")
    or Path(tempfile.gettempdir()) / "modnet-tools-model-api-0.2.5.2"
)
PROBE = Path(__file__).with_name("model_api_probe.py")


def _rt(xml: Path, *path: str) -> str | None:
    model = ov.Core().read_model(str(xml))
    return str(model.get_rt_info(list(path)).astype(str)) if model.has_rt_info(list(path)) else None


def test_model_info_says_only_what_is_true_for_model_api(converted_tame: Converted) -> None:
    """Model API reads model_info as instructions for *its* preprocessing: the IR normalises
    and reverses channels inside, so none of those keys may be there (they made it normalise
    twice), nor embedded_processing (it then skipped its own resize and layout)."""
    for xml in (converted_tame.fp32, converted_tame.fp16):
        assert _rt(xml, "model_info", "model_type") == "Portrait-matting"
        assert _rt(xml, "model_info", "layout") == "input:NCHW"
        for key in ("embedded_processing", "mean_values", "scale_values", "reverse_input_channels"):
            assert _rt(xml, "model_info", key) is None, key
        # What the IR does inside is still recorded, in our own section.
        assert _rt(xml, "modnet_tools", "input_color_order") == "BGR"
        assert _rt(xml, "modnet_tools", "mean_values") == "127.5 127.5 127.5"


def test_an_ir_from_random_weights_says_so(
    run_cli: RunCli, converted_tame: Converted, sample_photo: Path, tmp_path: Path
) -> None:
    from toolkit.matting.session import MattingSession, RandomWeightsWarning

    assert _rt(converted_tame.fp32, "modnet_tools", "weights") == "random"
    assert "meaningless" in (_rt(converted_tame.fp32, "modnet_tools", "warning") or "")
    with pytest.warns(RandomWeightsWarning, match="meaningless"):
        session = MattingSession.from_xml(converted_tame.fp32)
    assert session.weights == "random"
    proc = run_cli("infer", "-m", converted_tame.fp32, sample_photo, "-o", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if "meaningless" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: "), proc.stderr
    assert "Warning" not in proc.stderr  # one line, not a Python warning with its source line


def test_a_checkpoint_that_is_not_random_is_not_called_random(
    converted_tame: Converted, tmp_path: Path
) -> None:
    """The mark is the BatchNorm counters; a fine-tune (real counters) is ``unknown``."""
    import torch

    from toolkit.convert.pipeline import weights_origin
    from toolkit.hashing import file_digest

    state = torch.load(converted_tame.checkpoint, weights_only=True)
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        state[key] = torch.tensor(12345)
    tuned = tmp_path / "tuned.ckpt"
    torch.save(state, tuned)
    assert weights_origin(tuned, file_digest(tuned)) == "unknown"
    random_ckpt = converted_tame.checkpoint
    assert weights_origin(random_ckpt, file_digest(random_ckpt)) == "random"


def _model_api_python() -> Path:
    """The interpreter of a venv holding Model API 0.2.5.2 (reused, else created)."""
    python = MODEL_API_VENV / "bin" / "python"
    check = [str(python), "-c", "import model_api, openvino, cv2"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run(
            ["python3", "-m", "venv", str(MODEL_API_VENV)], check=True, capture_output=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *MODEL_API_PINS, "opencv-python-headless"],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"cannot install {' '.join(MODEL_API_PINS)} into {MODEL_API_VENV}: "
            f"{exc} {detail.decode(errors='replace')[-300:]}"
        )
    return python


@pytest.mark.slow
def test_model_api_0_2_5_2_runs_the_ir_with_no_configuration(
    converted_tame: Converted, sample_photo: Path, tmp_path: Path
) -> None:
    """``Model.create_model(xml)`` picks the portrait-matting wrapper from the IR alone and its
    matte is ours: exact at f32 on the 512x512 photo (no resize on either side), and within
    the two resizers' difference on a 640x400 frame (Model API resizes inside OpenVINO)."""
    from toolkit.matting.session import MattingSession

    python = _model_api_python()
    wide = tmp_path / "wide.png"
    photo = cv2.imread(str(sample_photo), cv2.IMREAD_COLOR)
    cv2.imwrite(str(wide), cv2.resize(photo, (640, 400), interpolation=cv2.INTER_AREA))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = MattingSession.from_xml(converted_tame.fp32)
    for image, exact in ((sample_photo, True), (wide, False)):
        out_default, out_f32 = tmp_path / "default.npy", tmp_path / "f32.npy"
        proc = subprocess.run(
            [str(python), str(PROBE), str(converted_tame.fp32), str(image), out_default, out_f32],
            capture_output=True,
            text=True,
            timeout=300,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["wrapper"] == "PortraitBackgroundMatting"
        assert report["model_api"] == "0.2.5.2" and report["openvino"].startswith("2024.6")
        ours = session.matte(cv2.imread(str(image), cv2.IMREAD_COLOR))
        theirs = np.load(out_f32)
        assert theirs.shape == ours.shape
        diff = np.abs(theirs - ours)
        if exact:
            assert float(diff.max()) < 1e-4, float(diff.max())
        else:
            # Reversed channels or a second normalisation move the mean by 0.03-0.06.
            assert float(diff.mean()) < 5e-3, float(diff.mean())
        # The default run (bf16 where the CPU has it) agrees to reduced-precision drift.
        assert float(np.abs(np.load(out_default) - ours).mean()) < 1e-2
    assert sys.executable  # the project's own interpreter never imported Model API
    assert "model_api" not in sys.modules
