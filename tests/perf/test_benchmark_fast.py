"""infer --fast: the measured fast mode through the real infer command and the Python API."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("nncf")


@pytest.mark.parametrize("caps", [None, "avx2"], ids=["this-cpu", "avx2-only"])
def test_fast_choice_measures_what_this_cpu_runs_and_keeps_the_budget(
    perf_model, perf_int8, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caps: str | None
) -> None:  # type: ignore[no-untyped-def]
    """The candidates are what the CPU runs natively (bf16 only with bf16), each is measured,
    and the winner is within the budget; a budget only f32 meets gives the FP32 IR at f32."""
    from toolkit.matting.runtime import CAPS_ENV, cpu_capabilities
    from toolkit.perf.budget import Budget
    from toolkit.perf.fastpath import BASELINE_LABEL, choose_fast

    if caps:
        monkeypatch.setenv(CAPS_ENV, caps)
    root = tmp_path / "root"
    shutil.copytree(perf_model.root / "public", root / "public")
    fp32 = root / "public" / perf_model.name / "FP32" / perf_model.fp32.name
    has_bf16 = cpu_capabilities().bf16
    loose = choose_fast(root, perf_model.name, budget=Budget(0.2, 0.9))
    labels = [m["label"] for m in loose.measured]
    expected = [BASELINE_LABEL] + ["FP32 IR at bf16"] * has_bf16 + ["INT8 IR at f32"]
    expected += ["INT8 IR at bf16"] * has_bf16
    assert labels == expected
    assert all(m["fps"] > 0 for m in loose.measured)
    assert loose.measured[0]["drift_mean"] == 0  # the baseline is the reference itself
    within = [m for m in loose.measured if m["within_budget"]]
    best = max(within, key=lambda m: m["fps"])
    # The fastest within the budget, unless none beats the baseline.
    assert loose.label in (best["label"], BASELINE_LABEL)
    assert "--fast:" in loose.describe()
    if not has_bf16:
        assert loose.precision == "f32"
    # A budget nothing but exact f32 meets: the baseline, said in one line.
    strict = choose_fast(root, perf_model.name, budget=Budget(1e-9, 1e-9), use_cache=False)
    assert strict.label == BASELINE_LABEL and strict.xml == fp32
    assert strict.precision == "f32" and "nothing is faster" in strict.describe()
    # Kept beside the model: the next call does not measure again.
    again = choose_fast(root, perf_model.name, budget=Budget(0.2, 0.9))
    assert again.cached and again.label == loose.label
    assert (root / "public" / perf_model.name / "fast-choice.json").is_file()


def test_fast_options_that_contradict_it_are_refused(perf_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.errors import UsageError
    from toolkit.perf.fastpath import FastModeUnavailable, check_fast_options, choose_fast

    with pytest.raises(UsageError, match="--precision"):
        check_fast_options("FP32", "f32")
    with pytest.raises(UsageError, match="--inference-precision"):
        check_fast_options(None, "bf16")
    with pytest.raises(FastModeUnavailable, match="modnet-tools convert"):
        choose_fast(tmp_path, perf_model.name)


def test_fast_session_runs_the_choice(perf_model, perf_int8, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.matting.session import MattingSession
    from toolkit.perf.budget import Budget
    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.fastpath import fast_session

    root = tmp_path / "root"
    shutil.copytree(perf_model.root / "public", root / "public")
    fast, choice = fast_session(
        root, perf_model.name, budget=Budget(0.2, 0.9), network_size=(96, 160)
    )
    assert fast.model.precision == choice.precision and fast.xml == choice.xml
    assert fast.network_size(200, 200) == (96, 160)
    exact = MattingSession.from_xml(perf_model.fp32)
    image = holdout_set(1, size=200)[0]
    a, b = fast.matte(image), exact.matte(image)
    assert a.shape == b.shape == (200, 200)
    assert float(np.abs(a - b).mean()) < 0.2  # the same matte, within the loose budget


def test_u8_nhwc_input_gives_the_same_matte(perf_model) -> None:  # type: ignore[no-untyped-def]
    import openvino as ov

    from toolkit.perf.calibration import holdout_set
    from toolkit.perf.fastpath import u8_nhwc_input

    core = ov.Core()
    image = holdout_set(1, size=128)[0]
    plain = core.compile_model(perf_model.fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    u8 = core.compile_model(
        u8_nhwc_input(core.read_model(perf_model.fp32)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    a = plain(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))[0]
    b = u8(np.ascontiguousarray(image[None]))[0]
    assert np.abs(a - b).max() < 1e-5


def test_infer_fast_says_what_it_chose_and_writes_the_same_outputs(
    run_cli, perf_model, perf_int8, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.perf.calibration import holdout_set

    root = tmp_path / "root"
    shutil.copytree(perf_model.root / "public", root / "public")
    photo = tmp_path / "person.png"
    cv2.imwrite(str(photo), holdout_set(1, size=256)[0])
    fast = run_cli(
        "infer", photo, "--fast", "--model-root", root, "-o", tmp_path / "fast",
        "--max-drift", "0.2",
    )  # fmt: skip
    assert fast.returncode == 0, fast.stderr
    lines = [line for line in fast.stderr.splitlines() if line.startswith("--fast:")]
    assert len(lines) == 1 and ("x the FP32 IR" in lines[0] or "nothing is faster" in lines[0])
    exact = run_cli("infer", photo, "--model-root", root, "-o", tmp_path / "exact")
    assert exact.returncode == 0, exact.stderr
    a = cv2.imread(str(tmp_path / "fast" / "person_alpha.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(tmp_path / "exact" / "person_alpha.png"), cv2.IMREAD_GRAYSCALE)
    assert a.shape == b.shape == (256, 256)
    assert (tmp_path / "fast" / "person_rgba.png").is_file()
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.2 * 255


def test_infer_fast_on_an_avx2_cpu_without_an_int8_ir_runs_f32_and_says_so(
    run_cli, perf_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.matting.runtime import CAPS_ENV

    root = tmp_path / "root"
    shutil.copytree(perf_model.fp32.parent, root / "public" / perf_model.name / "FP32")
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = run_cli(
        "infer", photo, "--fast", "--model-root", root, "-o", tmp_path / "out",
        env={CAPS_ENV: "avx2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("--fast:")]
    assert len(lines) == 1 and "nothing is faster" in lines[0] and "quantize" in lines[0]


def test_infer_fast_with_precision_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = run_cli("infer", photo, "--fast", "--precision", "FP32", "-o", tmp_path / "out")
    assert result.returncode == 2 and "--precision" in result.stderr
    assert "Traceback" not in result.stderr


def test_infer_help_states_the_fast_modes_accuracy_cost(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("infer", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--fast" in text and "budget" in text and "1/255" in text
