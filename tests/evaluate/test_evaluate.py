"""The evaluation core: OMZ's semantics, pinned by hand-computed values on a built dataset.

The dataset and the arithmetic behind every expected number are described in
``tests/evaluate/fixtures.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.evaluate.fixtures import GREY_A, GREY_B, stripe_matte_rgba, three_column_matte
from toolkit.evaluate.metrics import (
    EvaluationError,
    Pair,
    Stat,
    UnreadableError,
    evaluate,
    evaluate_folder,
    find_pairs,
    image_errors,
    quantize_prediction,
    read_ground_truth,
)


def constant(value: float):  # type: ignore[no-untyped-def]
    """A predictor whose matte is ``value`` everywhere (shaped like an IR output)."""
    return lambda image: np.full((1, 1, 512, 512), value, np.float32)


def test_truncation_not_rounding() -> None:
    # 0.999 * 255 = 254.745 -> 254 (rounding would give 255); 0.5 * 255 = 127.5 -> 127.
    assert quantize_prediction(np.full((512, 512), 0.999))[0, 0] == 254
    assert quantize_prediction(np.full((512, 512), 0.5))[0, 0] == 127
    assert quantize_prediction(np.full((512, 512), 1.0))[0, 0] == 255
    assert quantize_prediction(np.full((512, 512), 0.0039))[0, 0] == 0


def test_overshoot_is_clipped_not_wrapped() -> None:
    q = quantize_prediction(np.full((1, 1, 512, 512), 1.01, np.float32))
    assert q.shape == (512, 512)
    assert (q == 255).all()
    assert (quantize_prediction(np.full((512, 512), -0.01)) == 0).all()


def test_wrong_output_shape_and_nan_are_model_errors() -> None:
    with pytest.raises(EvaluationError, match="512x512"):
        quantize_prediction(np.zeros((256, 256), np.float32))
    with pytest.raises(EvaluationError, match="NaN"):
        quantize_prediction(np.full((512, 512), np.nan, np.float32))


def test_ground_truth_uses_pillow_pixel_centres_not_opencv_nearest(tmp_path: Path) -> None:
    stripe_matte_rgba(tmp_path / "s.png")
    gt = read_ground_truth(tmp_path / "s.png")
    assert gt.shape == (512, 512) and gt.dtype == np.uint8
    assert (gt == 255).all()  # Pillow samples source column 2x+1 (odd: alpha 255)
    alpha = np.asarray(Image.open(tmp_path / "s.png"))[..., 3]
    opencv = cv2.resize(alpha, (512, 512), interpolation=cv2.INTER_NEAREST)
    assert (opencv == 0).all()  # OpenCV samples column 2x: the other pixels

    three_column_matte(tmp_path / "t.png")
    gt3 = read_ground_truth(tmp_path / "t.png")
    assert [int((gt3[0] == v).sum()) for v in (0, 100, 200)] == [171, 170, 171]
    cv3 = cv2.resize(np.asarray(Image.open(tmp_path / "t.png")), (512, 512), interpolation=0)
    assert [int((cv3[0] == v).sum()) for v in (0, 100, 200)] == [171, 171, 170]
    # Against an all-zero prediction: Pillow's MAD is exactly 100.0, OpenCV's would not be.
    assert image_errors(gt3, np.zeros_like(gt3)) == (100.0, 8540000 / 512)
    assert image_errors(cv3, np.zeros_like(cv3))[0] == pytest.approx(51100 / 512)


def test_ground_truth_is_the_alpha_channel_or_a_grey_matte(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200  # colour must be ignored
    rgba[..., 3] = 37
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 4), 37, np.uint8), mode="L").save(tmp_path / "l.png")
    Image.fromarray(np.full((4, 4, 3), 37, np.uint8), mode="RGB").save(tmp_path / "grey.png")
    la = Image.fromarray(np.full((4, 4), 9, np.uint8), mode="L")
    la.putalpha(37)
    la.save(tmp_path / "la.png")
    for name in ("rgba", "l", "grey", "la"):
        gt = read_ground_truth(tmp_path / f"{name}.png")
        assert gt.shape == (512, 512) and (gt == 37).all(), name

    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 2] = 255
    Image.fromarray(colour, mode="RGB").save(tmp_path / "colour.png")
    with pytest.raises(UnreadableError, match="colour PNG without an alpha"):
        read_ground_truth(tmp_path / "colour.png")
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(UnreadableError, match="unsupported matte pixel format"):
        read_ground_truth(tmp_path / "deep.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableError, match=r"bad\.png"):
        read_ground_truth(tmp_path / "bad.png")


def test_population_std_like_the_accuracy_checker() -> None:
    stat = Stat.of([1.0, 154.0])
    assert (stat.mean, stat.std) == (77.5, 76.5)  # sample std (ddof=1) would be 108.19
    assert math.isnan(Stat.of([]).mean)


def test_pairing_reports_missing_mattes_and_honours_limit(matting_dataset: Path) -> None:
    pairs = find_pairs(matting_dataset, matting_dataset)
    assert [p.name for p in pairs] == ["a", "b", "c", "d", "e"]  # f.png has no image
    assert [p.name for p in pairs if p.matte is None] == ["c"]
    assert [p.name for p in find_pairs(matting_dataset, matting_dataset, limit=2)] == ["a", "b"]


def test_pairing_with_separate_folders(tmp_path: Path, matting_dataset: Path) -> None:
    images, mattes = tmp_path / "img", tmp_path / "alpha"
    images.mkdir()
    mattes.mkdir()
    for p in matting_dataset.iterdir():
        (images if p.suffix == ".jpg" else mattes).joinpath(p.name).write_bytes(p.read_bytes())
    pairs = find_pairs(images, mattes)
    assert [(p.name, p.matte.parent if p.matte else None) for p in pairs][:2] == [
        ("a", mattes),
        ("b", mattes),
    ]


def test_pairing_errors(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        find_pairs(tmp_path / "nope", tmp_path)
    with pytest.raises(EvaluationError, match=r"no \*\.jpg images"):
        find_pairs(tmp_path, tmp_path)


def test_hand_computed_figures_with_a_constant_prediction(matting_dataset: Path) -> None:
    result = evaluate_folder(matting_dataset, matting_dataset, constant(0.999))
    # pred 254 everywhere. a: gt 255 -> MAD 1, MSE 1.
    # b: |gt - 254| = 254 (171 cols), 154 (170), 54 (171) -> MAD 78848/512 = 154,
    #    MSE (171*254^2 + 170*154^2 + 171*54^2)/512 = 15562592/512 = 30395.6875.
    variant = result.variants[0]
    assert [(s.name, s.mad, s.mse) for s in variant.scores] == [
        ("a", 1.0, 1.0),
        ("b", 154.0, 30395.6875),
    ]
    assert (variant.mad.mean, variant.mad.std) == (77.5, 76.5)
    assert (variant.mse.mean, variant.mse.std) == (15198.34375, 15197.34375)
    assert result.images == 2 and result.considered == 5
    assert result.skipped_counts() == {
        "missing_matte": 1,
        "unreadable_image": 1,
        "unreadable_matte": 1,
        "too_large": 0,
    }
    assert [(s.name, s.kind) for s in result.skipped] == [
        ("c", "missing_matte"),
        ("d", "unreadable_image"),
        ("e", "unreadable_matte"),
    ]


def test_predictor_gets_the_bgr_image_stretched_bilinear_to_512(matting_dataset: Path) -> None:
    # A non-uniform image, so that the interpolation and the channel order both show.
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (37, 81, 3), dtype=np.uint8)
    small[..., 0] = 250  # blue in OpenCV's BGR
    small[..., 2] = 5
    assert cv2.imwrite(str(matting_dataset / "g.jpg"), small)
    three_column_matte(matting_dataset / "g.png")
    seen: list[np.ndarray] = []

    def record(image: np.ndarray) -> np.ndarray:
        seen.append(image)
        return np.zeros((512, 512), np.float32)

    evaluate([Pair("g", matting_dataset / "g.jpg", matting_dataset / "g.png")], [("r", record)])
    decoded = cv2.imread(str(matting_dataset / "g.jpg"))
    expected = cv2.resize(decoded, (512, 512), interpolation=cv2.INTER_LINEAR)
    (got,) = seen
    assert got.dtype == np.float32 and got.shape == (512, 512, 3)
    assert np.array_equal(got, expected.astype(np.float32))
    assert got[..., 0].mean() > 200 and got[..., 2].mean() < 60  # BGR, not RGB
    area = cv2.resize(decoded, (512, 512), interpolation=cv2.INTER_AREA)
    assert not np.array_equal(got, area.astype(np.float32))  # the check can tell them apart


def test_variants_share_images_and_report_drift(matting_dataset: Path) -> None:
    pairs = find_pairs(matting_dataset, matting_dataset)

    def blue(image: np.ndarray) -> np.ndarray:
        return image[..., 0] / 256

    result = evaluate(pairs, [("const", constant(0.999)), ("blue", blue)])
    ref, other = result.variants
    # blue: grey 128 -> 127.5 -> 127 (MAD vs 255 = 128); grey 64 -> 63.75 -> 63:
    # |0-63|, |100-63|, |200-63| over 171/170/171 columns -> 40490/512.
    assert [(s.mad, s.mse) for s in other.scores] == [
        (128.0, 16384.0),
        (40490 / 512, 4120928 / 512),
    ]
    # matte drift vs the reference (254): |127-254| = 127 and |63-254| = 191.
    assert [(s.drift_mean, s.drift_max) for s in other.scores] == [(127.0, 127), (191.0, 191)]
    assert (other.drift_mean, other.drift_max) == (159.0, 191)
    assert (ref.drift_mean, ref.drift_max) == (0.0, 0)
    assert GREY_A == 128 and GREY_B == 64  # the numbers above assume these greys

    doc = result.to_json()
    assert doc["images"] == 2
    assert doc["MAD"] == {"mean": 77.5, "std": 76.5}
    assert doc["variants"][1]["drift_vs_first"]["MAD_mean"] == pytest.approx(
        (128 + 40490 / 512) / 2 - 77.5
    )
    assert doc["skipped_by_reason"]["missing_matte"] == 1


def test_progress_callback_sees_every_pair(matting_dataset: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    evaluate(
        find_pairs(matting_dataset, matting_dataset),
        [("c", constant(0.5))],
        on_item=lambda pair, skip: seen.append((pair.name, skip.kind if skip else None)),
    )
    assert seen == [
        ("a", None),
        ("b", None),
        ("c", "missing_matte"),
        ("d", "unreadable_image"),
        ("e", "unreadable_matte"),
    ]
