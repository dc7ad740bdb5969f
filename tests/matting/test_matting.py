"""Resize rules, alpha handling, compositing, backgrounds and OFD (numpy/OpenCV only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import UsageError
from toolkit.matting.prepost import (
    OMZ_BACKGROUND_BGR,
    OneFrameDelay,
    alpha_to_input_size,
    composite,
    cutout,
    keep_aspect_size,
    network_size,
    parse_background,
    parse_resize,
    quantize_alpha,
    side_by_side,
    to_network_input,
)


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((720, 1280), (512, 896)),  # short side > 512: short -> 512, 1280*512/720 = 910 -> 896
        ((1280, 720), (896, 512)),
        ((300, 400), (512, 672)),  # long side < 512: upscaled, 682 -> 672
        ((512, 512), (512, 512)),
        ((480, 640), (480, 640)),  # long >= 512 and short <= 512: kept, already multiples
        ((500, 700), (480, 672)),  # kept, then floored
        ((1080, 1920), (512, 896)),
        ((100, 100), (512, 512)),
        ((40, 2000), (32, 1984)),  # extreme aspect: kept, floored, never below 32
    ],
)
def test_keep_aspect_follows_the_authors_rule(
    hw: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert keep_aspect_size(*hw) == expected


@given(st.integers(1, 6000), st.integers(1, 6000))
def test_keep_aspect_sizes_are_multiples_of_32_and_keep_the_orientation(h: int, w: int) -> None:
    nh, nw = keep_aspect_size(h, w)
    assert nh % 32 == 0 and nw % 32 == 0 and nh >= 32 and nw >= 32
    if h >= w:
        assert nh >= nw
    if max(h, w) < 512 or min(h, w) > 512:
        assert (nh if w >= h else nw) == 512  # the short side becomes 512
    else:
        assert (nh, nw) == (max(32, h - h % 32), max(32, w - w % 32))


def test_stretch_uses_the_ir_size_and_keep_aspect_ignores_it() -> None:
    assert network_size(720, 1280, "stretch", (512, 512)) == (512, 512)
    assert network_size(720, 1280, "stretch", None) == (512, 512)
    assert network_size(720, 1280, "stretch", (384, 640)) == (384, 640)
    assert network_size(720, 1280, "keep-aspect", (512, 512)) == (512, 896)


def test_parse_resize_rejects_unknown_modes() -> None:
    assert parse_resize("keep-aspect") == "keep-aspect"
    with pytest.raises(UsageError, match="stretch, keep-aspect"):
        parse_resize("fit")


def test_network_input_is_bgr_nchw_float_in_0_255() -> None:
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 250  # B, G, R
    tensor = to_network_input(frame, (32, 64), "stretch")
    assert tensor.shape == (1, 3, 32, 64) and tensor.dtype == np.float32
    assert tensor[0, :, 5, 5].tolist() == [10.0, 20.0, 250.0]  # channel order kept (BGR)


def test_stretch_resizes_bilinear_and_keep_aspect_uses_area() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)
    stretch = to_network_input(frame, (512, 512), "stretch")
    expected = cv2.resize(frame, (512, 512), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(stretch[0].transpose(1, 2, 0), expected.astype(np.float32))
    area = to_network_input(frame, (256, 576), "keep-aspect")
    expected = cv2.resize(frame, (576, 256), interpolation=cv2.INTER_AREA)
    assert np.array_equal(area[0].transpose(1, 2, 0), expected.astype(np.float32))


def test_alpha_goes_back_to_the_input_size_bilinear_and_clipped() -> None:
    raw = np.linspace(-0.1, 1.1, 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    alpha = alpha_to_input_size(raw, 50, 70)
    assert alpha.shape == (50, 70) and alpha.dtype == np.float32
    assert alpha.min() == 0.0 and alpha.max() == 1.0
    unclipped = cv2.resize(raw[0, 0], (70, 50), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(alpha, np.clip(unclipped, 0, 1))


def test_quantize_rounds_to_nearest() -> None:
    alpha = np.array([[0.0, 0.4 / 255, 0.6 / 255, 254.6 / 255, 1.0]], np.float32)
    assert quantize_alpha(alpha).tolist() == [[0, 0, 1, 255, 255]]
    assert quantize_alpha(alpha).dtype == np.uint8


def test_composite_is_frame_times_alpha_plus_background_times_one_minus_alpha() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out = composite(frame, alpha8, bg)
    a = alpha8.astype(np.float64)[..., None] / 255
    expected = frame * a + bg * (1 - a)
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-3
    assert np.array_equal(composite(frame, np.full((20, 30), 255, np.uint8), bg), frame)
    assert np.array_equal(composite(frame, np.zeros((20, 30), np.uint8), bg), bg)


def test_composite_equals_the_rounded_float_formula_for_every_value() -> None:
    """Every (frame value, background value, alpha) triple, with an image background and with
    solid colours (the lookup-table path): the integer implementation is exact."""
    v = np.arange(256, dtype=np.uint8)
    f, b, a = (x.reshape(4096, 4096) for x in np.meshgrid(v, v, v, indexing="ij"))
    frame, background = np.dstack([f, f, f]), np.dstack([b, b, b])

    def rounded_float(frame: np.ndarray, alpha8: np.ndarray, bg: np.ndarray) -> np.ndarray:
        w = alpha8.astype(np.float64)[..., None] / 255
        return np.rint(frame * w + bg * (1 - w)).astype(np.uint8)

    assert np.array_equal(composite(frame, a, background), rounded_float(frame, a, background))
    small_f = np.dstack([np.repeat(v, 256).reshape(256, 256)] * 3)
    small_a = np.tile(v, 256).reshape(256, 256)
    for colour in [(0, 0, 0), (255, 255, 255), (155, 255, 120), (1, 128, 254)]:
        bg = np.broadcast_to(np.array(colour, np.uint8), small_f.shape)  # as Background.render
        assert np.array_equal(composite(small_f, small_a, bg), rounded_float(small_f, small_a, bg))


def test_cutout_is_bgra_with_the_matte_as_alpha() -> None:
    frame = np.full((4, 5, 3), 7, np.uint8)
    alpha8 = np.arange(20, dtype=np.uint8).reshape(4, 5)
    rgba = cutout(frame, alpha8)
    assert rgba.shape == (4, 5, 4)
    assert np.array_equal(rgba[..., 3], alpha8) and np.array_equal(rgba[..., :3], frame)


def test_side_by_side_doubles_the_width() -> None:
    left = np.zeros((10, 12, 3), np.uint8)
    view = side_by_side(left, np.full((10, 12), 200, np.uint8))
    assert view.shape == (10, 24, 3) and view[0, 20].tolist() == [200, 200, 200]


@pytest.mark.parametrize(
    ("spec", "bgr"),
    [
        ("omz", OMZ_BACKGROUND_BGR),
        ("default", (155, 255, 120)),
        ("#FF8000", (0, 128, 255)),
        ("255,128,0", (0, 128, 255)),
        ("rgb:255,128,0", (0, 128, 255)),
        ("bgr:155,255,120", (155, 255, 120)),
        ("White", (255, 255, 255)),
    ],
)
def test_background_colours(spec: str, bgr: tuple[int, int, int]) -> None:
    frame = np.zeros((3, 4, 3), np.uint8)
    rendered = parse_background(spec).render(frame)
    assert rendered.shape == (3, 4, 3) and rendered[1, 2].tolist() == list(bgr)


def test_background_blur_is_a_box_blur_of_the_frame() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rendered = parse_background("blur:7").render(frame)
    assert np.array_equal(rendered, cv2.blur(frame, (7, 7)))


def test_background_image_is_resized_to_the_frame(tmp_path: Path) -> None:
    image = np.full((10, 20, 3), (1, 2, 3), np.uint8)
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), image)
    bg = parse_background(str(path), lambda p: cv2.imread(str(p)))
    rendered = bg.render(np.zeros((30, 40, 3), np.uint8))
    assert rendered.shape == (30, 40, 3) and rendered[15, 20].tolist() == [1, 2, 3]


@pytest.mark.parametrize("spec", ["blur:0", "blur:x", "256,0,0", "1,2", "#12345", "nosuchfile.png"])
def test_bad_backgrounds_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match="--background"):
        parse_background(spec, lambda p: np.zeros((2, 2, 3), np.uint8))


def _const(value: float) -> np.ndarray:
    return np.full((2, 3), value, np.float32)


def test_ofd_replaces_a_one_frame_flicker_by_the_neighbours_mean() -> None:
    ofd = OneFrameDelay(0.1)
    alphas = [_const(0.2), _const(0.9), _const(0.26), _const(0.26)]
    out = [a for a in (ofd.push(x) for x in alphas) if a is not None]
    last = ofd.flush()
    assert last is not None
    out.append(last)
    assert len(out) == 4
    assert np.allclose(out[0], 0.2)  # the first frame passes through
    assert np.allclose(out[1], 0.23)  # 0.9 differs from both 0.2 and 0.26, which agree
    assert np.allclose(out[2], 0.26) and np.allclose(out[3], 0.26)


def test_ofd_keeps_real_changes_and_is_per_pixel() -> None:
    ofd = OneFrameDelay(0.1)
    prev = np.array([[0.0, 0.0, 0.0]], np.float32)
    cur = np.array([[0.5, 0.05, 0.5]], np.float32)
    nxt = np.array([[0.0, 0.0, 1.0]], np.float32)
    smoothed = ofd.smooth(prev, cur, nxt)
    # pixel 0: flicker -> mean 0; pixel 1: within tolerance -> kept; pixel 2: neighbours disagree.
    assert smoothed.tolist() == [[0.0, pytest.approx(0.05), 0.5]]


def test_ofd_tolerance_must_be_a_fraction() -> None:
    with pytest.raises(UsageError):
        OneFrameDelay(0.0)
