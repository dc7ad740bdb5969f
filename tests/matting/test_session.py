"""MattingSession and IRModel on a real converted IR: shapes, both resize rules against
independently written pipelines, async order, precision hints, and model errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import openvino as ov
import pytest

from tests.matting.fixtures import InferModel
from toolkit.errors import UsageError
from toolkit.matting.runtime import IRModel, ModelError, parse_precision
from toolkit.matting.session import MattingSession, ModelNotFoundError, find_ir

WEBCAM = "modnet-webcam-portrait-matting"


def _raw_ir(xml: Path, height: int, width: int) -> ov.CompiledModel:
    """The IR compiled with plain OpenVINO calls (no toolkit code), f32, at height x width."""
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.input(0).get_any_name(): [1, 3, height, width]})
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.fixture(scope="module")
def wide_photo(astronaut_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A non-square 600x360 frame, so that stretching and keeping the aspect differ."""
    return cv2.resize(astronaut_bgr[60:420, :], (600, 360), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("size", [(512, 512), (360, 600), (1000, 700), (33, 47)])
def test_matte_is_float_in_0_1_at_the_input_size(
    infer_session: MattingSession, astronaut_bgr: npt.NDArray[np.uint8], size: tuple[int, int]
) -> None:
    frame = cv2.resize(astronaut_bgr, (size[1], size[0]))
    alpha = infer_session.matte(frame)
    assert alpha.shape == size and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert alpha.std() > 0.01  # a real, varying matte, not a constant


def test_stretch_matches_omz_demo_pipeline_step_by_step(
    infer_model: InferModel, infer_session: MattingSession, wide_photo: npt.NDArray[np.uint8]
) -> None:
    # OMZ's demo: frame resized to 512x512 bilinear (aspect ignored), fed as float BGR 0..255,
    # the 512x512 alpha resized back to the frame size bilinear.
    h, w = wide_photo.shape[:2]
    resized = cv2.resize(wide_photo, (512, 512), interpolation=cv2.INTER_LINEAR)
    tensor = resized.transpose(2, 0, 1)[None].astype(np.float32)
    raw = _raw_ir(infer_model.xml, 512, 512).create_infer_request().infer({0: tensor})
    small = next(iter(raw.values()))[0, 0]
    expected = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    alpha = infer_session.matte(wide_photo)
    assert np.abs(alpha - expected).max() < 1e-5

    # The comparison discriminates: the keep-aspect pipeline gives a visibly different matte.
    other = MattingSession(infer_session.model, "keep-aspect").matte(wide_photo)
    assert np.abs(other - expected).max() > 1e-2


def test_keep_aspect_matches_the_authors_pipeline(
    infer_model: InferModel, infer_session: MattingSession, wide_photo: npt.NDArray[np.uint8]
) -> None:
    # Authors' rule by hand for 600x360: short side 360 < 512 and long 600 >= 512 -> kept,
    # floored to multiples of 32 -> 576x352; area interpolation; matte resized back bilinear.
    resized = cv2.resize(wide_photo, (576, 352), interpolation=cv2.INTER_AREA)
    tensor = resized.transpose(2, 0, 1)[None].astype(np.float32)
    raw = _raw_ir(infer_model.xml, 352, 576).create_infer_request().infer({0: tensor})
    expected = cv2.resize(
        next(iter(raw.values()))[0, 0], (600, 360), interpolation=cv2.INTER_LINEAR
    )

    session = MattingSession(infer_session.model, "keep-aspect")
    assert session.network_size(360, 600) == (352, 576)
    alpha = session.matte(wide_photo)
    assert alpha.shape == (360, 600)
    assert np.abs(alpha - expected).max() < 1e-5


def test_a_dynamic_ir_runs_stretch_at_512_and_any_keep_aspect_size(
    dynamic_ir: Path, infer_session: MattingSession, wide_photo: npt.NDArray[np.uint8]
) -> None:
    dynamic = MattingSession.from_xml(dynamic_ir)
    assert dynamic.model.fixed_size is None
    assert np.abs(dynamic.matte(wide_photo) - infer_session.matte(wide_photo)).max() < 1e-4
    keep = MattingSession.from_xml(dynamic_ir, resize="keep-aspect")
    assert keep.matte(wide_photo).shape == (360, 600)


def test_stream_yields_in_order_and_equals_single_calls(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8]
) -> None:
    session = MattingSession.from_xml(infer_model.xml, performance="throughput", requests=3)
    frames = [np.roll(astronaut_bgr, 25 * i, axis=1)[: 300 + 10 * i] for i in range(5)]
    out = list(session.matte_stream((f"k{i}", f) for i, f in enumerate(frames)))
    assert [k for k, _, _ in out] == [f"k{i}" for i in range(5)]
    for (_, frame, alpha), original in zip(out, frames, strict=True):
        assert frame is original
        assert np.abs(alpha - session.matte(original)).max() < 1e-5
    assert session.model.optimal_requests((512, 512)) == 3


def test_stream_with_mixed_sizes_under_keep_aspect_stays_in_order(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One compiled size at a time: every size change evicts a network with requests in flight.
    monkeypatch.setattr("toolkit.matting.runtime.COMPILED_CACHE_SIZE", 1)
    session = MattingSession.from_xml(
        infer_model.xml, resize="keep-aspect", performance="throughput"
    )
    sizes = [(512, 512), (300, 700), (512, 512), (700, 300), (300, 700)]
    frames = [cv2.resize(astronaut_bgr, (w, h)) for h, w in sizes]
    out = list(session.matte_stream(enumerate(frames)))
    assert [k for k, _, _ in out] == list(range(5))
    assert [a.shape for _, _, a in out] == sizes


def test_bf16_stays_close_to_f32_on_a_tame_checkpoint(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8]
) -> None:
    from toolkit.matting.runtime import cpu_capabilities

    f32 = MattingSession.from_xml(infer_model.xml, precision="f32").matte(astronaut_bgr)
    session = MattingSession.from_xml(infer_model.xml, precision="bf16")
    bf16 = session.matte(astronaut_bgr)
    diff = np.abs(f32 - bf16)
    if cpu_capabilities().bf16:  # OpenVINO says this CPU runs bf16: it does, and it moves
        assert session.model.precision == "bf16" and session.model.precision_note is None
        # Measured here: max about 0.02, mean about 0.002 (see the README); bf16 is not exact.
        assert 0 < diff.mean() < 0.02 and diff.max() < 0.2
    else:  # it runs f32, exactly, and says so
        assert session.model.precision == "f32" and session.model.precision_note
        assert diff.max() == 0


def test_bf16_on_a_cpu_without_it_runs_f32_and_says_so(
    infer_model: InferModel, astronaut_bgr: npt.NDArray[np.uint8], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AVX2-only branch, on any CPU: the override stands for a CPU without bf16."""
    from toolkit.matting.runtime import CAPS_ENV, cpu_capabilities

    monkeypatch.setenv(CAPS_ENV, "avx2")
    caps = cpu_capabilities()
    assert not caps.bf16 and caps.int8 and caps.fp32_lanes() == 8
    assert caps.instruction_sets() == ["AVX2"]
    session = MattingSession.from_xml(infer_model.xml, precision="bf16")
    assert session.model.precision == "f32" and session.model.requested_precision == "bf16"
    assert "no bf16" in str(session.model.precision_note)
    assert "running f32 instead" in str(session.model.precision_note)
    exact = MattingSession.from_xml(infer_model.xml, precision="f32")
    assert np.array_equal(session.matte(astronaut_bgr), exact.matte(astronaut_bgr))


def test_capability_override_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.matting.runtime import CAPS_ENV, cpu_capabilities

    monkeypatch.setenv(CAPS_ENV, "avx2,avx512,vnni,bf16,amx")
    caps = cpu_capabilities()
    assert caps.bf16 and caps.fp32_lanes() == 16
    assert caps.instruction_sets() == ["AVX2", "AVX-512", "VNNI", "bf16", "AMX"]
    monkeypatch.setenv(CAPS_ENV, "avx2,sse9")
    with pytest.raises(UsageError, match="sse9"):
        cpu_capabilities()


def test_precision_hint_validation() -> None:
    assert parse_precision("BF16") == "bf16"
    with pytest.raises(UsageError, match="f32, bf16, f16"):
        parse_precision("int8")


def test_find_ir_prefers_fp32_then_fp16_and_says_how_to_make_one(
    infer_model: InferModel, tmp_path: Path
) -> None:
    assert find_ir(infer_model.root, WEBCAM) == infer_model.xml
    assert find_ir(infer_model.root, WEBCAM, "FP16").parent.name == "FP16"
    only16 = tmp_path / "public" / WEBCAM / "FP16"
    shutil.copytree(infer_model.xml.parent.parent / "FP16", only16)
    assert find_ir(tmp_path, WEBCAM).parent.name == "FP16"
    with pytest.raises(ModelNotFoundError) as info:
        find_ir(tmp_path / "empty", WEBCAM)
    message = str(info.value)
    assert "`modnet-tools download` then `modnet-tools convert`" in message
    assert "\n" not in message


def test_model_errors_are_one_line(infer_model: InferModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such IR file"):
        IRModel(tmp_path / "none.xml")
    lone = tmp_path / "lone.xml"
    shutil.copy(infer_model.xml, lone)
    with pytest.raises(ModelError, match=r"weights file lone\.bin is missing"):
        IRModel(lone)
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net>not really</net>")
    garbage.with_suffix(".bin").write_bytes(b"\x00" * 8)
    with pytest.raises(ModelError, match="cannot read the IR"):
        IRModel(garbage)
    with pytest.raises(ModelError, match="device 'NPU9' is not available"):
        IRModel(infer_model.xml, device="NPU9")


def test_an_ir_that_is_not_an_image_model_is_refused(tmp_path: Path) -> None:
    import openvino.opset13 as ops

    x = ops.parameter([1, 10], np.float32, name="x")
    model = ov.Model([ops.relu(x)], [x], "not_modnet")
    xml = tmp_path / "other.xml"
    ov.save_model(model, xml)
    with pytest.raises(ModelError, match="N x 3 x H x W"):
        IRModel(xml)


def test_preprocess_refuses_frames_of_the_wrong_kind(infer_session: MattingSession) -> None:
    with pytest.raises(ValueError, match="BGR uint8"):
        infer_session.preprocess(np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="BGR uint8"):
        infer_session.preprocess(np.zeros((40, 40, 3), np.float32))
