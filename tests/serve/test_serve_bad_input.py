"""Every bad input gets a 4xx with a JSON error, and the server goes on serving.

The shared server (``fixtures.server``) runs with small limits: 2 MiB bodies, 4 MP images,
3 s per request. After each case a real photo must still be matted.
"""

from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest

from tests.serve.fixtures import MODEL, ServerProcess
from toolkit.paths import sample_image

PHOTO = sample_image().read_bytes()


def _still_serving(server: ServerProcess) -> None:
    assert server.alive(), server.output()
    r = httpx.post(
        f"{server.url}/v1/matte", content=PHOTO, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), r.text


def _error(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert isinstance(message, str) and "\n" not in message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge size, with a tiny compressed payload (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 65536, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


MATTE_CASES = [
    # (name, content, content type, params, status, words in the message)
    ("empty body", b"", "image/png", {}, 422, ["empty"]),
    ("truncated PNG", PHOTO[: len(PHOTO) // 3], "image/png", {}, 422, ["truncated"]),
    (
        "random bytes",
        bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "application/octet-stream",
        {},
        415,
        ["not an image"],
    ),
    ("text content type", PHOTO, "text/plain", {}, 415, ["Content-Type"]),
    (
        "JSON content type",
        b'{"url": "http://127.0.0.1/x.png"}',
        "application/json",
        {},
        415,
        ["Content-Type"],
    ),
    (
        "form-urlencoded",
        b"file=/etc/passwd",
        "application/x-www-form-urlencoded",
        {},
        415,
        ["Content-Type"],
    ),
    ("no content type", PHOTO, "", {}, 415, ["Content-Type"]),
    ("decompression bomb", _bomb(60000, 60000), "image/png", {}, 413, ["pixels", "limit"]),
    ("bomb under Pillow's own guard", _bomb(3000, 3000), "image/png", {}, 413, ["pixels"]),
    ("too small", _jpeg(20, 20), "image/jpeg", {}, 422, ["too small"]),
    ("unknown output", PHOTO, "image/png", {"output": "mask"}, 400, ["output must be"]),
    ("rgba as jpeg", PHOTO, "image/png", {"output": "rgba", "format": "jpeg"}, 400, ["JPEG"]),
    ("bad format", PHOTO, "image/png", {"format": "gif"}, 400, ["format"]),
    ("background with alpha", PHOTO, "image/png", {"background": "white"}, 400, ["composite"]),
    (
        "background naming a file",
        PHOTO,
        "image/png",
        {"output": "composite", "background": str(sample_image())},
        400,
        ["not a colour"],
    ),
    (
        "background naming /etc/passwd",
        PHOTO,
        "image/png",
        {"output": "composite", "background": "/etc/passwd"},
        400,
        ["not a colour"],
    ),
    (
        "background URL",
        PHOTO,
        "image/png",
        {"output": "composite", "background": "http://127.0.0.1:1/bg.png"},
        400,
        ["not a colour"],
    ),
    (
        "bad blur",
        PHOTO,
        "image/png",
        {"output": "composite", "background": "blur:0"},
        400,
        ["blur"],
    ),
    (
        "unknown parameter",
        PHOTO,
        "image/png",
        {"url": "http://127.0.0.1:1/x"},
        400,
        ["unknown query parameter"],
    ),
]


@pytest.mark.parametrize("case", MATTE_CASES, ids=[c[0] for c in MATTE_CASES])
def test_bad_matte_request_is_a_json_4xx(server: ServerProcess, case) -> None:  # type: ignore[no-untyped-def]
    _, content, ctype, params, status, needles = case
    headers = {"Content-Type": ctype} if ctype else {}
    r = httpx.post(
        f"{server.url}/v1/matte", content=content, headers=headers, params=params, timeout=60
    )
    _error(r, status, *needles)
    _still_serving(server)


def test_multipart_without_a_file_field(server: ServerProcess) -> None:
    r = httpx.post(f"{server.url}/v1/matte", files={"image": ("a.png", PHOTO)}, timeout=60)
    _error(r, 400, "'file'")
    r = httpx.post(
        f"{server.url}/v1/matte",
        data={"file": "/etc/passwd"},
        files={"other": ("x", b"x")},
        timeout=60,
    )
    _error(r, 400, "'file'")
    two = [("file", ("a.png", PHOTO)), ("file", ("b.png", PHOTO))]
    _error(httpx.post(f"{server.url}/v1/matte", files=two, timeout=60), 400, "too many files")
    fields = {f"f{i}": "x" for i in range(20)}
    r = httpx.post(
        f"{server.url}/v1/matte", data=fields, files={"file": ("a.png", PHOTO)}, timeout=60
    )
    _error(r, 400, "too many fields")
    bad = b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'  # never closed
    r = httpx.post(
        f"{server.url}/v1/matte",
        content=bad,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert r.status_code in (400, 422), r.text
    _still_serving(server)


def test_oversized_uploads_are_refused_before_reading(server: ServerProcess) -> None:
    big = PHOTO + b"\x00" * (25 * 1024 * 1024)
    r = httpx.post(
        f"{server.url}/v1/matte", content=big, headers={"Content-Type": "image/png"}, timeout=60
    )
    _error(r, 413, "limit")

    def chunks():  # chunked: no Content-Length, the running size trips the limit
        for _ in range(260):
            yield b"\x00" * 100_000

    r = httpx.post(
        f"{server.url}/v1/matte",
        content=chunks(),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    _error(r, 413, "limit")
    r = httpx.post(f"{server.url}/v1/matte", files={"file": ("big.png", big)}, timeout=60)
    _error(r, 413)
    _still_serving(server)


def test_wrong_methods_and_paths(server: ServerProcess) -> None:
    _error(httpx.get(f"{server.url}/v1/matte"), 405)
    _error(httpx.get(f"{server.url}/v1/fetch?url=http://127.0.0.1:1/"), 404)
    _error(httpx.get(f"{server.url}/docs"), 404)
    _error(httpx.get(f"{server.url}/v2/models/{MODEL}/infer"), 405)
    _still_serving(server)


def _raw(server: ServerProcess) -> socket.socket:
    parts = urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_truncated_upload_then_hang_up(server: ServerProcess) -> None:
    """The client promises 200 kB, sends 10 kB and closes: the server drops it and goes on."""
    for _ in range(3):
        sock = _raw(server)
        head = "POST /v1/matte HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 200000\r\n\r\n"
        sock.sendall(head.encode() + PHOTO[:10000])
        sock.close()
    _still_serving(server)


def test_slow_client_is_cut_off(server: ServerProcess) -> None:
    """A client trickling its body is answered 408 at the deadline (3 s here); others are
    served meanwhile."""
    sock = _raw(server)
    head = "POST /v1/matte HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    sock.sendall(head.encode())
    started = time.monotonic()
    sock.sendall(PHOTO[:100])
    _still_serving(server)  # while the slow one hangs
    sock.settimeout(20)
    response = b""
    try:
        while b"\r\n\r\n" not in response:
            sock.sendall(b"\x00")  # one byte now and then
            time.sleep(0.5)
            response += sock.recv(65536) if _readable(sock) else b""
    except (BrokenPipeError, ConnectionResetError):
        pass
    response += _read_response(sock) if b"\r\n\r\n" not in response else b""
    sock.close()
    elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"not received in time" in response
    assert elapsed < 15, elapsed
    _still_serving(server)


def _readable(sock: socket.socket) -> bool:
    import select

    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


def test_host_names_other_than_loopback_are_refused(server: ServerProcess) -> None:
    """DNS rebinding: a page on another name resolving to 127.0.0.1 cannot use the server."""
    r = httpx.post(
        f"{server.url}/v1/matte",
        content=PHOTO,
        headers={"Content-Type": "image/png", "Host": "evil.example"},
    )
    _error(r, 403, "Host")
    _still_serving(server)


def test_cross_site_websocket_is_refused(server: ServerProcess) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws_url = server.url.replace("http://", "ws://") + "/v1/live"
    with pytest.raises(InvalidStatus), connect(ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
        pass
    with connect(ws_url, origin=server.url) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"format": "png"}))
        assert json.loads(ws.recv(timeout=10))["ok"]


def _v2(
    server: ServerProcess,
    body: bytes,
    headers: dict[str, str | bytes] | None = None,
    model: str = MODEL,
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", content=body, headers=headers or {}, timeout=60
    )


def _v2_json(**inp: object) -> bytes:
    base: dict[str, object] = {"name": "input", "shape": [1, 3, 512, 512], "datatype": "FP32"}
    base.update(inp)
    return json.dumps({"inputs": [base]}).encode()


def test_malformed_v2_requests(server: ServerProcess) -> None:
    n = 3 * 512 * 512
    binary = np.zeros(n, np.float32).tobytes()
    head = _v2_json(parameters={"binary_data_size": len(binary)})
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"[1, 2]", {}, 400, "JSON object"),
        (b"{}", {}, 400, "'inputs'"),
        (b'{"inputs": []}', {}, 400, "'inputs'"),
        (_v2_json(name="image", data=[0.0] * 10), {}, 400, "unknown input"),
        (_v2_json(datatype="INT64", data=[0] * n), {}, 400, "FP32"),
        (_v2_json(shape=[1, 3, 256, 256], data=[0.0] * (3 * 256 * 256)), {}, 400, "shape"),
        (_v2_json(shape=[1, 3, 512, "512"], data=[0.0]), {}, 400, "shape"),
        (_v2_json(data=[0.0] * 10), {}, 400, "has 10 values"),
        (_v2_json(data=["a"] * n), {}, 400, "numbers only"),
        (_v2_json(), {}, 400, "needs 'data'"),
        (
            head + binary[:1000],
            {"Inference-Header-Content-Length": str(len(head))},
            400,
            "binary part",
        ),
        (
            head + binary,
            {"Inference-Header-Content-Length": str(len(head) + 10**7)},
            400,
            "body has only",
        ),
        (head + binary, {"Inference-Header-Content-Length": "-5"}, 400, "byte count"),
        (
            _v2_json(parameters={"binary_data_size": 12}) + b"\x00" * 12,
            {
                "Inference-Header-Content-Length": str(
                    len(_v2_json(parameters={"binary_data_size": 12}))
                )
            },
            400,
            "binary_data_size",
        ),
        (
            head + np.full(n, np.nan, np.float32).tobytes(),
            {"Inference-Header-Content-Length": str(len(head))},
            400,
            "NaN",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3, 512, 512],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": len(binary)},
                        }
                    ],
                    "outputs": [{"name": "alpha"}],
                }
            ).encode()
            + binary,
            {
                "Inference-Header-Content-Length": str(
                    len(head) + len(', "outputs": [{"name": "alpha"}]')
                )
            },
            400,
            "unknown output",
        ),
        (b"[" * 100000 + b"]" * 100000, {}, 400, ""),
        (
            head + binary,
            {"Inference-Header-Content-Length": str(len(head)), "Content-Encoding": "gzip"},
            415,
            "compressed",
        ),
    ]
    for body, headers, status, needle in cases:
        r = _v2(server, body, headers)
        _error(r, status, needle)
    _error(
        _v2(
            server,
            head + binary,
            {"Inference-Header-Content-Length": str(len(head))},
            model="other",
        ),
        404,
        "unknown model",
    )
    _error(
        httpx.post(f"{server.url}/v2/models/{MODEL}/versions/7/infer", content=b"{}"),
        404,
        "no version",
    )
    _error(httpx.get(f"{server.url}/v2/models/other"), 404)
    ok = _v2(server, head + binary, {"Inference-Header-Content-Length": str(len(head))})
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["shape"] == [1, 1, 512, 512]  # binary in, JSON out: as asked
    _still_serving(server)


def test_v2_json_sizes_are_exact(server: ServerProcess) -> None:
    """A binary tensor of the wrong length, one byte off either way."""
    n = 3 * 512 * 512
    for size in (4 * n - 1, 4 * n + 1):
        head = _v2_json(parameters={"binary_data_size": size})
        r = _v2(server, head + b"\x00" * size, {"Inference-Header-Content-Length": str(len(head))})
        _error(r, 400, "binary_data_size")
    _still_serving(server)


def test_pixel_limit_is_the_servers(server: ServerProcess) -> None:
    """4 MP limit on this server: 2100 x 2000 (4.2 MP) is refused as a real image too."""
    ok, data = cv2.imencode(".jpg", np.zeros((2000, 2100, 3), np.uint8))
    assert ok
    r = httpx.post(
        f"{server.url}/v1/matte",
        content=data.tobytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    _error(r, 413, "4,000,000")
    _still_serving(server)


def test_connections_without_headers_are_closed(server: ServerProcess) -> None:
    """Slow headers (a slowloris): silent or half-sent headers are dropped after the request
    deadline (3 s here), and the server serves others meanwhile."""
    socks = [_raw(server) for _ in range(3)]
    socks[1].sendall(b"POST /v1/matte HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    socks[2].sendall(b"GET / HTTP/1.1\r\n")
    _still_serving(server)
    for sock in socks:
        sock.settimeout(30)
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 25
        sock.close()
    _still_serving(server)


def test_hostile_json_numbers_and_headers(server: ServerProcess) -> None:
    """Python's JSON parser raises ValueError (not JSONDecodeError) on a 5000-digit integer;
    ``'²'.isdigit()`` is true but ``int('²')`` fails."""
    huge = (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 512, 512], "data": ['
        + b"1" * 5000
        + b"]}]}"
    )
    _error(_v2(server, huge), 400, "not valid JSON")
    _error(
        _v2(server, b"{}", {"Inference-Header-Content-Length": "\u00b2".encode()}),
        400,
        "byte count",
    )
    n = 3 * 512 * 512
    _error(_v2(server, _v2_json(data=[True] * n)), 400, "numbers only")
    _error(_v2(server, _v2_json(data=["1"] * n)), 400, "numbers only")
    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 3, 512, 512], "datatype": "FP32", "data": [0.0] * n}
            ],
            "parameters": {"binary_data_output": "false"},
        }
    ).encode()
    _error(_v2(server, body), 400, "true or false")
    over = _v2_json(data=[0.0] * n) + b" " * (25 * 1024 * 1024)  # over --max-upload-mb 24
    _error(_v2(server, over), 413, "limit")
    _still_serving(server)


def test_repeated_query_parameters_and_hosts(server: ServerProcess) -> None:
    r = httpx.post(
        f"{server.url}/v1/matte?output=rgba&output=alpha",
        content=PHOTO,
        headers={"Content-Type": "image/png"},
    )
    _error(r, 400, "more than once")
    sock = _raw(server)
    sock.sendall(
        b"GET /v1/info HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert _read_response(sock).startswith(b"HTTP/1.1 403")
    sock.close()
    _still_serving(server)


def test_live_socket_survives_hostile_settings(server: ServerProcess) -> None:
    from websockets.sync.client import connect

    with connect(server.url.replace("http://", "ws://") + "/v1/live") as ws:
        ws.send('{"output": ' + "1" * 5000 + "}")
        assert "not valid JSON" in json.loads(ws.recv(timeout=10))["error"]
        ws.send("[" * 100000)
        assert "nested too deeply" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(json.dumps({"format": "png"}))
        assert json.loads(ws.recv(timeout=10))["ok"]
