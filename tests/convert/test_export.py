"""PyTorch -> ONNX: the contract (names, shapes, one file, checker), dynamic sizes, failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.convert.fixtures import Converted
from toolkit.convert.export import (
    DEFAULT_INPUT_SHAPE,
    ExportError,
    export_model,
    format_input_shape,
    import_onnx,
    parse_input_shape,
)
from toolkit.convert.verify import normalise
from toolkit.errors import UsageError
from toolkit.model.checkpoint import load_model


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,3,512,512", (1, 3, 512, 512)),
        ("[1, 3, 320, 480]", (1, 3, 320, 480)),
        ("(1,3,64,64)", (1, 3, 64, 64)),
        ("320x480", (1, 3, 320, 480)),
        ("dynamic", None),
        ("1,3,?,?", None),
        ("1,3,-1,-1", None),
    ],
)
def test_input_shape_forms(text: str, expected: tuple[int, int, int, int] | None) -> None:
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1,3,500,512", "multiples of 32"),
        ("1,3,512,0", "multiples of 32"),
        ("1,1,512,512", "3 channels"),
        ("0,3,512,512", "at least 1"),
        ("1,3,512", "4 comma-separated"),
        ("1,3,a,512", "integers"),
        ("2,3,?,?", "1,3,?,?"),
        ("1x2x3", "HxW"),
        ("2,3,512,512", "batch 2 is not supported"),
        ("1,3,4096,4096", "larger than"),
        ("1,3,32,16384", "larger than"),
    ],
)
def test_bad_input_shapes_are_usage_errors(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("?", r"\?")):
        parse_input_shape(text)


def test_format_input_shape() -> None:
    assert format_input_shape(DEFAULT_INPUT_SHAPE) == "[1,3,512,512]"
    assert format_input_shape(None) == "[1,3,?,?]"


def test_exported_onnx_is_one_checked_file_with_the_omz_contract(
    converted_touchy: Converted,
) -> None:
    onnx = import_onnx()
    path = converted_touchy.onnx
    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 512, 512]
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [1, 1, 512, 512]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 11
    # self-contained: no sidecar weights next to it, and the weights really are inside
    assert not list(path.parent.glob("*.data")) and path.stat().st_size > 20_000_000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    record = {p.key: p.value for p in proto.metadata_props}
    assert "modnet_tools.made_from" in record


def test_onnx_runtime_on_the_export_matches_pytorch(
    converted_touchy: Converted, photo_bgr: np.ndarray
) -> None:
    import onnxruntime as ort

    x = normalise(photo_bgr)
    with torch.no_grad():
        ref = load_model(converted_touchy.checkpoint)(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(converted_touchy.onnx), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x})[0]
    assert out.shape == (1, 1, 512, 512)
    assert float(np.abs(out - ref).max()) < 1e-3
    assert float(ref.std()) > 0.03  # the matte varies, so the comparison means something


def test_dynamic_export_runs_at_other_multiples_of_32(
    touchy_checkpoint: Path, photo_bgr: np.ndarray, tmp_path: Path
) -> None:
    import cv2
    import onnxruntime as ort

    model = load_model(touchy_checkpoint)
    path = export_model(model, tmp_path / "dyn.onnx", input_shape=None)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2:] == ["height", "width"]
    for h, w in ((320, 480), (256, 256)):
        x = normalise(cv2.resize(photo_bgr, (w, h), interpolation=cv2.INTER_AREA))
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = session.run(None, {"input": x})[0]
        assert out.shape == (1, 1, h, w)
        assert float(np.abs(out - ref).max()) < 1e-3


def test_static_export_at_another_size(touchy_checkpoint: Path, tmp_path: Path) -> None:
    onnx = import_onnx()
    path = export_model(
        load_model(touchy_checkpoint), tmp_path / "s.onnx", input_shape=(1, 3, 320, 480)
    )
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 320, 480]


class _Broken(torch.nn.Module):
    """A network whose forward fails half-way, like an export that breaks mid-graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside forward")


def test_a_failed_export_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="boom inside forward"):
        export_model(_Broken(), dest)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_the_previous_file(tmp_path: Path) -> None:
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_model(_Broken(), dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_refuses_bad_shapes_and_opsets(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="multiples of 32"):
        export_model(_Broken(), tmp_path / "m.onnx", input_shape=(1, 3, 100, 100))
    with pytest.raises(UsageError, match="opset 10"):
        export_model(_Broken(), tmp_path / "m.onnx", opset=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("impostor", ["package", "namespace", "module"])
def test_an_onnx_folder_in_the_working_directory_is_never_imported(
    tmp_path: Path, impostor: str
) -> None:
    canary = tmp_path / "CANARY"
    code = f"open({str(canary)!r}, 'w').close()\nraise ImportError('impostor ran')\n"
    if impostor == "module":
        (tmp_path / "onnx.py").write_text(code)
    else:
        (tmp_path / "onnx").mkdir()
        if impostor == "package":
            (tmp_path / "onnx" / "__init__.py").write_text(code)
    probe = "from toolkit.convert.export import import_onnx; m = import_onnx(); print(m.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout
    assert not canary.exists()


@pytest.mark.slow
@pytest.mark.parametrize("shape", [DEFAULT_INPUT_SHAPE, None])
def test_dynamo_exporter_agrees_with_pytorch(
    touchy_checkpoint: Path,
    photo_bgr: np.ndarray,
    tmp_path: Path,
    shape: tuple[int, int, int, int] | None,
) -> None:
    import onnxruntime as ort

    model = load_model(touchy_checkpoint)
    path = export_model(model, tmp_path / "d.onnx", input_shape=shape, exporter="dynamo")
    assert not list(tmp_path.glob("*.data"))
    x = normalise(photo_bgr)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    assert float(np.abs(out - ref).max()) < 1e-3
