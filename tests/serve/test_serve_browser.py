"""The web page in a real browser: Debian's Chromium driven by Playwright, against the real server.

Photo mode: a photo is chosen, the page shows the server's matte, draws the cut-out and the
composite, and its download buttons give the server's own files. Live mode: Chromium's fake
camera plays a .y4m this test writes; the page sends the frames over the WebSocket and shows
the matted frames coming back, with the frame rate.

Set ``MODNET_TOOLS_SCREENSHOTS=DIR`` to also save the page's screenshots there (the README's
come from ``MODNET_TOOLS_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.fixtures import ServerProcess
from toolkit.paths import sample_image

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
    ),
]


def _screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = os.environ.get("MODNET_TOOLS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A YUV4MPEG2 file (4:2:0), the format Chromium's fake camera plays in a loop."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def _launch(playwright_instance, *extra: str):  # type: ignore[no-untyped-def]
    return playwright_instance.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra])


def _wait_until(page, expression: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Poll ``expression`` in the page (the page's CSP forbids the eval behind
    ``wait_for_function``; ``evaluate`` runs through the debugging protocol instead)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if page.evaluate(f"() => Boolean({expression})"):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"not true after {seconds} s: {expression}: {page.inner_text('body')[:500]}"
    )


def _pixels(page, selector: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A canvas's RGBA pixels, read in the page."""
    data = page.evaluate(
        """(sel) => { const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return {w: c.width, h: c.height, px: Array.from(d.data)}; }""",
        selector,
    )
    return np.asarray(data["px"], np.uint8).reshape(data["h"], data["w"], 4)


def test_photo_upload_shows_matte_cutout_composite_and_downloads(
    server: ServerProcess,
    playwright_instance,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    photo = tmp_path / "portrait.jpg"
    cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(sample_image())), (480, 360)))
    expected = httpx.post(
        f"{server.url}/v1/matte",
        content=photo.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    ).content
    matte = np.asarray(Image.open(io.BytesIO(expected)))
    browser = _launch(playwright_instance)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]")
        assert "modnet-webcam-portrait-matting" in page.inner_text("#model-info")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-rendered]", timeout=60_000)
        assert "480×360" in page.inner_text("#status")
        assert page.evaluate("document.getElementById('matte').naturalWidth") == 480
        cut = _pixels(page, "#cutout")
        assert cut.shape == (360, 480, 4)
        np.testing.assert_array_equal(cut[..., 3], matte)  # the cut-out's alpha is the matte
        # The composite over the chosen colour follows frame * a + colour * (1 - a).
        page.eval_on_selector(
            "#colour", "(el) => { el.value = '#ff0000'; el.dispatchEvent(new Event('input')); }"
        )
        comp = _pixels(page, "#composite").astype(int)
        a = matte.astype(int)
        red = (cut[..., 0].astype(int) * a + 255 * (255 - a) + 127) // 255
        assert np.abs(comp[..., 0] - red).max() <= 1
        assert np.abs(comp[..., 2] - (cut[..., 2].astype(int) * a + 127) // 255).max() <= 1
        for button, name, check in (
            ("#dl-alpha", "portrait_alpha.png", lambda b: b == expected),
            ("#dl-rgba", "portrait_rgba.png", lambda b: Image.open(io.BytesIO(b)).mode == "RGBA"),
            (
                "#dl-composite",
                "portrait_composite.png",
                lambda b: Image.open(io.BytesIO(b)).getpixel((0, 0))[:3] != (0, 0, 0) or True,
            ),
        ):
            with page.expect_download() as download:
                page.click(button)
            assert download.value.suggested_filename == name
            data = Path(download.value.path()).read_bytes()
            assert check(data), name
        # The composite download is the server's composite over the chosen red.
        server_red = httpx.post(
            f"{server.url}/v1/matte",
            params={"output": "composite", "background": "#ff0000"},
            content=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        ).content
        with page.expect_download() as download:
            page.click("#dl-composite")
        assert Path(download.value.path()).read_bytes() == server_red
        _screenshot(page, "serve-photo.png")
        # A file that is not an image: one clear message on the page, nothing breaks.
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "415" in page.inner_text("#status")
        assert errors == []
    finally:
        browser.close()


def test_live_mode_receives_matted_camera_frames(
    server: ServerProcess,
    playwright_instance,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    base = cv2.imread(str(sample_image()))
    frames = [
        cv2.resize(base[i * 8 : i * 8 + 400, i * 8 : i * 8 + 400], (320, 240)) for i in range(10)
    ]
    video = write_y4m(tmp_path / "camera.y4m", frames)
    browser = _launch(
        playwright_instance,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.grant_permissions(["camera"], origin=server.url)
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]")
        page.click("#tab-live")
        page.click("#live-start")
        _wait_until(page, "Number(document.getElementById('live-fps').dataset.frames) >= 5", 90)
        size = page.evaluate(
            "[document.getElementById('live-result').naturalWidth, document.getElementById('live-result').naturalHeight]"
        )
        assert size == [320, 240]
        assert float(page.get_attribute("#live-fps", "data-fps") or 0) > 0
        assert "fps" in page.inner_text("#live-fps")
        # The result is a composite over the chosen colour: the frame's border region, where
        # the random-weight matte is whatever it is, still differs from the camera frame.
        result = page.evaluate(
            """() => { const img = document.getElementById('live-result');
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            return Array.from(ctx.getImageData(0, 0, c.width, c.height).data); }"""
        )
        px = np.asarray(result, np.uint8).reshape(240, 320, 4)
        assert px[..., 3].min() == 255 and px[..., :3].std() > 1
        _screenshot(page, "serve-live.png")
        page.click("#live-stop")
        _wait_until(page, "document.getElementById('live-start').disabled === false", 10)
    finally:
        browser.close()


def test_screenshots_folder_is_optional() -> None:
    """Documented knob: without it no file is written anywhere."""
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
