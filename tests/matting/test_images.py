"""Image loading (formats, depths, channels, EXIF, limits, bad files) and input expansion."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from toolkit.matting.images import InputError, expand_inputs, load_image


@pytest.fixture
def picture() -> npt.NDArray[np.uint8]:
    """A smooth, asymmetric BGR test picture (90 x 120)."""
    y, x = np.mgrid[0:90, 0:120]
    return np.dstack(((x * 2) % 256, (y * 2) % 256, (x + y) % 256)).astype(np.uint8)


@pytest.mark.parametrize(
    ("ext", "tolerance"),
    [(".png", 0), (".bmp", 0), (".tif", 0), (".tiff", 0), (".jpg", 12), (".webp", 12)],
)
def test_reads_common_formats_as_bgr_uint8(
    tmp_path: Path, picture: npt.NDArray[np.uint8], ext: str, tolerance: int
) -> None:
    path = tmp_path / f"pic{ext}"
    assert cv2.imwrite(str(path), picture)
    loaded = load_image(path)
    assert loaded.shape == picture.shape and loaded.dtype == np.uint8
    diff = np.abs(loaded.astype(int) - picture.astype(int))
    assert diff.mean() <= tolerance / 3 and diff.max() <= max(tolerance * 4, 0)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_colour_is_reduced_to_eight_bits(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    path = tmp_path / f"deep{ext}"
    assert cv2.imwrite(str(path), deep)
    loaded = load_image(path)
    assert loaded.shape == (40, 50, 3) and loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - deep.astype(int) // 257).max() <= 1


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_grey_becomes_three_equal_channels(tmp_path: Path, ext: str) -> None:
    grey = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (40, 1))
    path = tmp_path / f"grey16{ext}"
    assert cv2.imwrite(str(path), grey)
    loaded = load_image(path)
    assert loaded.shape == (40, 64, 3)
    assert np.array_equal(loaded[..., 0], loaded[..., 2])
    assert np.abs(loaded[..., 1].astype(int) - np.rint(grey / 257).astype(int)).max() <= 1


def test_grey_eight_bit(tmp_path: Path) -> None:
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1))
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    loaded = load_image(path)
    assert loaded.shape == (40, 64, 3) and np.array_equal(loaded[..., 1], grey)


def test_transparency_is_flattened_over_white(tmp_path: Path) -> None:
    bgra = np.zeros((40, 40, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[:, :20, 3] = 255  # left half opaque, right half fully transparent
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), bgra)
    loaded = load_image(path)
    assert loaded.shape == (40, 40, 3)
    assert loaded[5, 5].tolist() == [10, 20, 30]
    assert loaded[5, 30].tolist() == [255, 255, 255]


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 20, 40))
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded[5, 5].tolist() == [255, 0, 0]  # index 1: RGB blue -> BGR (255, 0, 0)
    assert loaded[5, 30].tolist() == [255, 255, 255]  # index 0 is transparent


@pytest.mark.parametrize(
    ("orientation", "rotate"),
    [(6, cv2.ROTATE_90_CLOCKWISE), (3, cv2.ROTATE_180), (8, cv2.ROTATE_90_COUNTERCLOCKWISE)],
)
def test_exif_orientation_is_honoured(
    tmp_path: Path, picture: npt.NDArray[np.uint8], orientation: int, rotate: int
) -> None:
    rgb = Image.fromarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    rgb.save(path, quality=98, exif=exif)
    loaded = load_image(path)
    expected = cv2.rotate(picture, rotate)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected.astype(int)).mean() < 3


def test_pixel_limit_gives_a_clear_message(tmp_path: Path, picture: npt.NDArray[np.uint8]) -> None:
    path = tmp_path / "pic.png"
    cv2.imwrite(str(path), picture)
    with pytest.raises(
        InputError, match=r"90 is 10,800 pixels, over the limit of 5,000.*--max-pixels"
    ):
        load_image(path, max_pixels=5000)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (the pixel data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 200_000])
def test_absurd_dimensions_are_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(InputError, match="pixels") as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_tiny_images_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), np.zeros((8, 100, 3), np.uint8))
    with pytest.raises(InputError, match=r"too small \(100x8\)"):
        load_image(path)


def _bad_file(kind: str, folder: Path, picture: npt.NDArray[np.uint8]) -> Path:
    """A file (or folder) that is not a readable image, of the given kind."""
    path = folder / {"empty": "empty.jpg", "noise": "noise.jpg", "text": "notes.png"}.get(
        kind, "missing.jpg"
    )
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "noise":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        path.write_text("hello, not a picture")
    elif kind == "truncated":
        ok, data = cv2.imencode(".jpg", cv2.resize(picture, (400, 300)))
        assert ok
        path = folder / "cut_short.jpg"
        path.write_bytes(data.tobytes()[: len(data) // 2])
    elif kind == "folder":
        path = folder
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("noise", "not an image"),
        ("text", "not an image"),
        ("truncated", "corrupt or truncated"),
        ("folder", "not a regular file"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(
    tmp_path: Path, picture: npt.NDArray[np.uint8], kind: str, needle: str
) -> None:
    path = _bad_file(kind, tmp_path, picture)
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


# --- expansion --------------------------------------------------------------------------------


def _touch_image(path: Path) -> Path:
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    return path


def test_folders_list_images_and_videos_sorted_skipping_outputs_and_others(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.jpg", "a.png", "c.webp", "x_alpha.png", "x_rgba.png", ".hidden.png"):
        _touch_image(folder / name)
    (folder / "clip.mp4").write_bytes(b"\x00")
    (folder / "notes.txt").write_text("x")
    (folder / "sub").mkdir()
    items = expand_inputs([str(folder)])
    assert [Path(i.label).name for i in items] == ["a.png", "b.jpg", "c.webp", "clip.mp4"]
    assert [i.kind for i in items] == ["image", "image", "image", "video"]


def test_globs_cameras_missing_and_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _touch_image(tmp_path / "one.jpg")
    _touch_image(tmp_path / "two.jpg")
    _touch_image(tmp_path / "three.png")
    items = expand_inputs(["*.jpg", "one.jpg", "0", "gone.png", "*.gif", str(tmp_path / "one.jpg")])
    kinds = [(i.kind, i.label) for i in items]
    assert kinds[:2] == [("image", "one.jpg"), ("image", "two.jpg")]
    assert kinds[2] == ("camera", "camera 0") and items[2].camera == 0
    assert items[3].kind == "error" and "no such file" in (items[3].error or "")
    assert items[4].kind == "error" and "no image or video matches" in (items[4].error or "")
    assert len(items) == 5  # one.jpg reached three ways, processed once


def test_a_file_named_like_a_camera_index_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _touch_image(tmp_path / "picture.png").rename(tmp_path / "1")
    (item,) = expand_inputs(["1"])
    assert item.kind == "image"  # sniffed from its content, not taken for camera 1


def test_empty_folder_is_an_error_item(tmp_path: Path) -> None:
    (item,) = expand_inputs([str(tmp_path)])
    assert item.kind == "error" and "no images or videos" in (item.error or "")
