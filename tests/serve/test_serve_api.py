"""The real server, every endpoint, against ``infer`` and the IR run locally.

The server is ``python -m toolkit serve`` in a subprocess on 127.0.0.1 (``tests/serve/fixtures.py``);
``infer`` runs as a subprocess too, on the same IR, so "identical" compares what two users get.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.fixtures import MODEL, ServerProcess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _infer(root: Path, image: Path, out: Path, *args: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolkit",
            "infer",
            str(image),
            "--model-root",
            str(root),
            "-o",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def infer_outputs(serve_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """infer's files for the sample photo (PNG) and a JPEG of it, with composites."""
    from toolkit.paths import sample_image

    work = tmp_path_factory.mktemp("infer")
    jpeg = work / "portrait.jpg"
    cv2.imwrite(str(jpeg), cv2.resize(cv2.imread(str(sample_image())), (640, 480)))
    _infer(serve_root, sample_image(), work / "png", "-b", "#00ff00")
    _infer(serve_root, jpeg, work / "jpg", "-b", "blur:15")
    return {
        "png": sample_image(),
        "jpg": jpeg,
        "png_alpha": work / "png" / "astronaut_alpha.png",
        "png_rgba": work / "png" / "astronaut_rgba.png",
        "png_composite": work / "png" / "astronaut_composite.png",
        "jpg_alpha": work / "jpg" / "portrait_alpha.png",
        "jpg_composite": work / "jpg" / "portrait_composite.jpg",
    }


def test_matte_upload_is_byte_identical_to_infer(
    server: ServerProcess, infer_outputs: dict[str, Path]
) -> None:
    for kind in ("png", "jpg"):
        data = infer_outputs[kind].read_bytes()
        r = httpx.post(f"{server.url}/v1/matte", files={"file": (f"x.{kind}", data)}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert r.content == infer_outputs[f"{kind}_alpha"].read_bytes(), kind


def test_raw_body_cutout_and_composites_match_infer(
    server: ServerProcess, infer_outputs: dict[str, Path]
) -> None:
    png = infer_outputs["png"].read_bytes()
    jpg = infer_outputs["jpg"].read_bytes()
    cases = [
        (png, "image/png", {"output": "alpha"}, "png_alpha"),
        (png, "application/octet-stream", {"output": "rgba"}, "png_rgba"),
        (png, "image/png", {"output": "composite", "background": "#00ff00"}, "png_composite"),
        (
            jpg,
            "image/jpeg",
            {"output": "composite", "background": "blur:15", "format": "jpeg"},
            "jpg_composite",
        ),
    ]
    for body, ctype, params, expected in cases:
        r = httpx.post(
            f"{server.url}/v1/matte",
            content=body,
            headers={"Content-Type": ctype},
            params=params,
            timeout=60,
        )
        assert r.status_code == 200, (params, r.text)
        assert r.content == infer_outputs[expected].read_bytes(), params


def test_outputs_have_the_input_size_and_kind(server: ServerProcess) -> None:
    image = np.zeros((301, 457, 3), np.uint8)
    image[50:250, 150:300] = (40, 120, 220)
    ok, png = cv2.imencode(".png", image)
    assert ok
    for params, mode in (
        ({}, "L"),
        ({"output": "rgba"}, "RGBA"),
        ({"output": "composite"}, "RGB"),
        ({"output": "composite", "background": "white", "format": "jpeg"}, "RGB"),
        ({"output": "alpha", "format": "jpg"}, "L"),
    ):
        r = httpx.post(
            f"{server.url}/v1/matte",
            content=png.tobytes(),
            headers={"Content-Type": "image/png"},
            params=params,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        im = Image.open(io.BytesIO(r.content))
        assert im.size == (457, 301) and im.mode == mode, (params, im.size, im.mode)
        assert im.format == ("JPEG" if params.get("format") in ("jpeg", "jpg") else "PNG")


def test_page_static_files_and_info(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="drop"' in page.text and 'id="live-start"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = httpx.get(f"{server.url}/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    assert page.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{server.url}/v1/nothing").headers["x-content-type-options"] == "nosniff"
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/matte" in schema["paths"] and "/v2/models/{model}/infer" in schema["paths"]
    info = httpx.get(f"{server.url}/v1/info").json()
    assert info["model"] == MODEL and info["input"] == [1, 3, 512, 512]
    assert info["token_required"] is False
    # Nothing outside the static folder is served through it.
    for path in ("/static/../settings.py", "/static/%2e%2e/settings.py", "/static/..%2fapp.py"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 404 and b"ServeSettings" not in r.content, path


def test_v2_health_and_metadata(server: ServerProcess) -> None:
    base = f"{server.url}/v2"
    assert httpx.get(f"{base}/health/live").status_code == 200
    assert httpx.get(f"{base}/health/ready").status_code == 200
    meta = httpx.get(f"{base}/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 3, 512, 512]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [1, 1, 512, 512]}]
    assert httpx.get(f"{base}/models/{MODEL}/versions/1").json() == meta
    assert httpx.get(f"{base}/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{base}/models/{MODEL}/versions/1/ready").status_code == 200
    assert httpx.get(f"{base}").json()["extensions"] == ["binary_tensor_data"]


def _local(serve_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real input tensor and the IR's output for it, run here (same compile options)."""
    from toolkit.matting.session import MattingSession
    from toolkit.paths import sample_image

    session = MattingSession.from_xml(serve_root / "public" / MODEL / "FP32" / f"{MODEL}.xml")
    tensor = session.preprocess(cv2.imread(str(sample_image())))
    return tensor, session.model.infer(tensor)


def test_tritonclient_gets_the_local_ir_output(server: ServerProcess, serve_root: Path) -> None:
    import tritonclient.http as triton

    tensor, expected = _local(serve_root)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.get_model_metadata(MODEL)["inputs"][0]["shape"] == [1, 3, 512, 512]
        for binary in (True, False):
            inp = triton.InferInput("input", list(tensor.shape), "FP32")
            inp.set_data_from_numpy(tensor, binary_data=binary)
            out = triton.InferRequestedOutput("output", binary_data=binary)
            result = client.infer(MODEL, [inp], outputs=[out], request_id="r1")
            got = result.as_numpy("output")
            assert got.shape == (1, 1, 512, 512) and got.dtype == np.float32
            np.testing.assert_array_equal(got, expected)
            assert result.get_response()["id"] == "r1"
        # no outputs named: the protocol's default is every output, binary
        inp = triton.InferInput("input", list(tensor.shape), "FP32")
        inp.set_data_from_numpy(tensor)
        np.testing.assert_array_equal(
            client.infer(MODEL, [inp], model_version="1").as_numpy("output"), expected
        )
        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            client.infer("another-model", [inp])
    finally:
        client.close()


def test_v2_json_tensor_over_plain_http(server: ServerProcess, serve_root: Path) -> None:
    tensor, expected = _local(serve_root)
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 3, 512, 512],
                "datatype": "FP32",
                "data": tensor.tolist(),
            }
        ]
    }
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=json.dumps(body), timeout=120)
    assert r.status_code == 200, r.text[:300]
    out = r.json()["outputs"][0]
    assert out["name"] == "output" and out["shape"] == [1, 1, 512, 512]
    np.testing.assert_array_equal(
        np.asarray(out["data"], np.float32).reshape(1, 1, 512, 512), expected
    )


def test_live_websocket_answers_each_frame(
    server: ServerProcess, infer_outputs: dict[str, Path]
) -> None:
    from websockets.sync.client import connect

    jpeg = infer_outputs["jpg"].read_bytes()
    ws_url = server.url.replace("http://", "ws://") + "/v1/live"
    with connect(ws_url, max_size=2**24) as ws:
        ws.send(json.dumps({"output": "alpha", "format": "png"}))
        assert json.loads(ws.recv(timeout=10))["ok"] is True
        for _ in range(3):
            ws.send(jpeg)
            reply = ws.recv(timeout=60)
            assert isinstance(reply, bytes)
            assert reply == infer_outputs["jpg_alpha"].read_bytes()  # infer's matte again
        ws.send(json.dumps({"output": "composite", "background": "#0000ff", "format": "jpeg"}))
        assert json.loads(ws.recv(timeout=10))["ok"] is True
        ws.send(jpeg)
        im = Image.open(io.BytesIO(ws.recv(timeout=60)))
        assert im.format == "JPEG" and im.size == (640, 480)
        ws.send(b"not an image")
        assert "not an image" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(json.dumps({"output": "sideways"}))
        assert "output must be one of" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(jpeg)  # still serving this socket
        assert isinstance(ws.recv(timeout=60), bytes)


@pytest.mark.slow
def test_live_socket_outlives_the_request_deadline(
    server: ServerProcess, infer_outputs: dict[str, Path]
) -> None:
    """The header deadline (3 s here) is for HTTP requests; an upgraded WebSocket in use stays."""
    import time

    from websockets.sync.client import connect

    jpeg = infer_outputs["jpg"].read_bytes()
    with connect(server.url.replace("http://", "ws://") + "/v1/live", max_size=2**24) as ws:
        ws.send(json.dumps({"output": "alpha", "format": "png"}))
        assert json.loads(ws.recv(timeout=10))["ok"]
        started = time.monotonic()
        while time.monotonic() - started < 8:
            ws.send(jpeg)
            assert isinstance(ws.recv(timeout=60), bytes)
            time.sleep(1)


def test_phone_photos_and_deep_images_are_read_like_infer_reads_them(server: ServerProcess) -> None:
    """HEIC (what phones shoot) and 16-bit PNG go through infer's own decoder."""
    import pillow_heif

    from toolkit.paths import sample_image

    rgb = Image.open(sample_image()).convert("RGB").resize((384, 256))
    heic = io.BytesIO()
    pillow_heif.from_pillow(rgb).save(heic, quality=90)
    deep = io.BytesIO()
    rgb.convert("I;16").save(deep, "PNG")
    for body, ctype in ((heic.getvalue(), "image/heic"), (deep.getvalue(), "image/png")):
        r = httpx.post(
            f"{server.url}/v1/matte", content=body, headers={"Content-Type": ctype}, timeout=60
        )
        assert r.status_code == 200, (ctype, r.text)
        assert Image.open(io.BytesIO(r.content)).size == (384, 256)
