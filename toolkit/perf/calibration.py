"""Images for INT8 calibration and for measuring a quantized model's drift.

Post-training quantization needs inputs whose activations look like real use, so that the
ranges NNCF picks cover what the network will see. The best set is the user's own photos
(``quantize --calibration DIR``). Without one, this module makes a default set offline and
deterministically, from two sources:

* the bundled astronaut portrait, augmented (crop and scale, mirror, small rotation,
  brightness, contrast, gamma, colour cast, sensor noise, blur);
* synthetic portrait-like scenes: a textured, lit background and a person-shaped figure
  (torso, neck, head with a skin tone, hair) drawn with OpenCV.

What that is worth: it exercises the network with person-like colour statistics, edges and
a centred figure, which is far better than noise, but it is one real face plus cartoons.
Ranges calibrated on it are a starting point; calibrate on a few hundred of your own frames
for a deployment. The drift report uses a *held-out* set made the same way with other random
draws (other crops of the photo, other synthetic people), so no image is both calibrated on
and measured, but the two sets share their sources: the drift is measured on the same kind
of images, not on unseen real photos.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from toolkit.errors import ToolkitError
from toolkit.matting.images import DEFAULT_MAX_PIXELS, InputError, load_image
from toolkit.paths import sample_image

U8Image = npt.NDArray[np.uint8]

#: Seeds of the calibration and the held-out draws: distinct, so the sets never share an image.
CALIBRATION_SEED = 20_240_601
HOLDOUT_SEED = 77_000_013
#: The images ``quantize --max-drift`` searches on: neither calibrated on nor held out.
VALIDATION_SEED = 31_337_029

_SKIN_BGR = [(60, 90, 140), (95, 135, 190), (120, 160, 215), (150, 190, 235), (45, 65, 100)]
_HAIR_BGR = [(20, 20, 25), (30, 45, 80), (60, 90, 140), (150, 170, 200), (80, 80, 85)]


class CalibrationError(ToolkitError):
    """The calibration folder is missing, empty or holds no readable image."""


def _random_colour(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    return rng.uniform(20, 235, size=3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> npt.NDArray[np.float32]:
    """A lit gradient plus low-frequency blobs and a few hard-edged shapes (a room, a wall)."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 * (1 - t) + c1 * t
    coarse = rng.normal(0, 25, size=(6, 6, 3)).astype(np.float32)
    img += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(float(v) for v in _random_colour(rng))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 10, size // 2, 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), colour, -1)
        else:
            cv2.ellipse(img, (x0, y0), (w // 2, h // 2), 0, 0, 360, colour, -1)
    return img


def _person(rng: np.random.Generator, img: npt.NDArray[np.float32]) -> None:
    """Draw a head-and-shoulders figure, centred like a webcam portrait, in place."""
    size = img.shape[0]
    cx = size / 2 + rng.normal(0, size * 0.06)
    head_r = size * rng.uniform(0.11, 0.18)
    head_y = size * rng.uniform(0.30, 0.45)
    skin = np.array(_SKIN_BGR[int(rng.integers(len(_SKIN_BGR)))], np.float32)
    skin += rng.normal(0, 8, 3).astype(np.float32)
    shirt = _random_colour(rng)
    hair = np.array(_HAIR_BGR[int(rng.integers(len(_HAIR_BGR)))], np.float32)
    shoulder_y = head_y + head_r * rng.uniform(1.5, 1.9)
    half_w = head_r * rng.uniform(2.2, 3.2)
    torso = np.array(
        [
            [cx - half_w * 0.55, shoulder_y - head_r * 0.2],
            [cx + half_w * 0.55, shoulder_y - head_r * 0.2],
            [cx + half_w, shoulder_y + head_r * 0.6],
            [cx + half_w * 1.1, size + 5],
            [cx - half_w * 1.1, size + 5],
            [cx - half_w, shoulder_y + head_r * 0.6],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [torso], tuple(float(v) for v in shirt))
    # Shading across the torso, so the clothing is not a flat colour.
    xx = np.mgrid[0:size, 0:size][1].astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [torso], 255)
    shade = 1.0 - 0.35 * np.abs(xx - cx) / max(half_w, 1.0)
    img[mask > 0] *= np.clip(shade[mask > 0], 0.5, 1.0)[:, None]
    neck_w = head_r * 0.45
    cv2.rectangle(
        img,
        (int(cx - neck_w), int(head_y)),
        (int(cx + neck_w), int(shoulder_y)),
        tuple(float(v) for v in skin * 0.9),
        -1,
    )
    axes = (int(head_r * rng.uniform(0.8, 0.95)), int(head_r * rng.uniform(1.05, 1.25)))
    tilt = float(rng.normal(0, 6))
    # Hair: a larger ellipse behind the face, offset up.
    hair_axes = (int(axes[0] * rng.uniform(1.05, 1.3)), int(axes[1] * rng.uniform(1.0, 1.25)))
    hair_centre = (int(cx), int(head_y - head_r * rng.uniform(0.1, 0.3)))
    cv2.ellipse(img, hair_centre, hair_axes, tilt, 0, 360, tuple(float(v) for v in hair), -1)
    cv2.ellipse(img, (int(cx), int(head_y)), axes, tilt, 0, 360, tuple(float(v) for v in skin), -1)
    # Eyes and mouth: small dark marks, enough to give a face its typical edges.
    eye_dx, eye_y = axes[0] * 0.4, head_y - axes[1] * 0.1
    for sx in (-1, 1):
        cv2.ellipse(
            img,
            (int(cx + sx * eye_dx), int(eye_y)),
            (max(2, int(axes[0] * 0.14)), max(1, int(axes[1] * 0.06))),
            tilt,
            0,
            360,
            (40.0, 30.0, 30.0),
            -1,
        )
    cv2.ellipse(
        img,
        (int(cx), int(head_y + axes[1] * 0.45)),
        (max(3, int(axes[0] * 0.3)), max(1, int(axes[1] * 0.07))),
        tilt,
        0,
        360,
        tuple(float(v) for v in skin * 0.6),
        -1,
    )
    # Stray hairs: thin curves crossing the silhouette, the detail matting cares about.
    for _ in range(int(rng.integers(10, 40))):
        a = rng.uniform(math.pi * 0.9, math.pi * 2.1)
        r0 = hair_axes[1] * rng.uniform(0.8, 1.0)
        r1 = r0 * rng.uniform(1.05, 1.25)
        p0 = (int(hair_centre[0] + r0 * math.cos(a)), int(hair_centre[1] + r0 * math.sin(a)))
        p1 = (int(hair_centre[0] + r1 * math.cos(a)), int(hair_centre[1] + r1 * math.sin(a)))
        cv2.line(img, p0, p1, tuple(float(v) for v in hair), 1, cv2.LINE_AA)


def synthetic_portrait(rng: np.random.Generator, size: int = 512) -> U8Image:
    """One portrait-like BGR uint8 image: background, figure, lighting, blur and noise."""
    img = _background(rng, size)
    _person(rng, img)
    # Light from one side, a little lens blur, sensor noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 0.75 + 0.5 * (rng.uniform(-0.5, 0.5) * (xx - 0.5) + rng.uniform(-0.3, 0.3) * yy)
    img *= light[..., None]
    sigma = float(rng.uniform(0.4, 1.6))
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), np.float32)
    img += rng.normal(0, rng.uniform(1, 6), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def augment(image: U8Image, rng: np.random.Generator, size: int = 512) -> U8Image:
    """A photometric and geometric variant of ``image``, at ``size`` x ``size``."""
    h, w = image.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    ch, cw = int(h * scale), int(w * scale)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    angle = float(rng.normal(0, 6))
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    out = cv2.warpAffine(out, rot, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    f = out.astype(np.float32)
    f = f * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)  # contrast, brightness
    f *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # colour cast
    f = 255.0 * (np.clip(f, 0, 255) / 255.0) ** rng.uniform(0.75, 1.35)  # gamma
    if rng.random() < 0.4:
        f = np.asarray(cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.5, 1.5))), np.float32)
    f += rng.normal(0, rng.uniform(0, 6), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)


def generated_set(count: int, seed: int, size: int = 512) -> list[U8Image]:
    """``count`` images, alternately an augmented astronaut and a synthetic portrait."""
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = np.random.default_rng(seed)
    photo = load_image(sample_image())
    return [
        augment(photo, rng, size) if i % 2 == 0 else synthetic_portrait(rng, size)
        for i in range(count)
    ]


def default_calibration_set(count: int, size: int = 512) -> list[U8Image]:
    """The calibration images used when the user gives no folder."""
    return generated_set(count, CALIBRATION_SEED, size)


def holdout_set(count: int, size: int = 512) -> list[U8Image]:
    """Images for the drift report: other random draws than any calibration set's."""
    return generated_set(count, HOLDOUT_SEED, size)


def validation_set(count: int, size: int = 512) -> list[U8Image]:
    """Images the budget search measures drift on (its own draws: the held-out set stays
    unseen by the search)."""
    return generated_set(count, VALIDATION_SEED, size)


def folder_images(folder: Path, option: str = "--calibration") -> list[Path]:
    """The still images directly inside ``folder`` (sorted), or one clear error naming
    ``option`` (the command-line option that gave the folder).

    Still or video is told by content (:mod:`toolkit.matting.sniff`), as ``infer`` does: a
    HEIC photo counts, a video renamed ``.jpg`` does not."""
    from toolkit.matting.sniff import classify_media, is_media_candidate

    if not folder.exists():
        raise CalibrationError(f"{option} {folder}: no such folder")
    if not folder.is_dir():
        raise CalibrationError(f"{option} {folder}: not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and is_media_candidate(p)
        and classify_media(p) == "image"
    )
    if not files:
        raise CalibrationError(f"{option} {folder}: no images found")
    return files


def load_folder(
    folder: Path,
    limit: int | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    option: str = "--calibration",
) -> Iterator[tuple[Path, U8Image]]:
    """Decode the folder's images lazily (a big folder never sits in memory at once); files
    that cannot be decoded, or are over ``max_pixels`` (refused from their header, as
    ``infer`` does), are skipped, with the last reason in the error only if none is readable."""
    files = folder_images(folder, option)
    yielded = 0
    last_error: str | None = None
    for path in files:
        if limit is not None and yielded >= limit:
            return
        try:
            image = load_image(path, max_pixels=max_pixels)
        except InputError as exc:
            last_error = str(exc)
            continue
        yielded += 1
        yield path, image
    if yielded == 0:
        raise CalibrationError(
            f"{option} {folder}: none of its {len(files)} images could be read"
            + (f" ({last_error})" if last_error else "")
        )
