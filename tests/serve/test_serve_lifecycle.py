"""The server's life: the token, the bounded queue, a SIGTERM that drains, the CLI's errors."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import assert_one_line_error
from tests.serve.fixtures import MODEL, ServerProcess, start_server
from toolkit.paths import sample_image

PHOTO = sample_image().read_bytes()


def _slow_upload(server: ServerProcess) -> socket.socket:
    """A request that has sent its headers and half its body: admitted, in flight, waiting."""
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    head = (
        f"POST /v1/matte HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(PHOTO)}\r\n\r\n"
    )
    sock.sendall(head.encode() + PHOTO[: len(PHOTO) // 2])
    return sock


def _finish(sock: socket.socket) -> bytes:
    sock.sendall(PHOTO[len(PHOTO) // 2 :])
    data = b""
    while b"\r\n\r\n" not in data or len(data) < 2000:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def test_token_guards_the_api_not_the_page(serve_root: Path, tmp_path: Path) -> None:
    import tritonclient.http as triton
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_server(serve_root, tmp_path, env={"MODNET_TOOLS_TOKEN": "s3cret-token"})
    try:
        url = f"{server.url}/v1/matte"
        png = {"Content-Type": "image/png"}
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-token"},
        ):
            r = httpx.post(url, content=PHOTO, headers={**png, **headers}, timeout=60)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
            assert "Bearer" in r.json()["error"]
        good = {**png, "Authorization": "Bearer s3cret-token"}
        assert httpx.post(url, content=PHOTO, headers=good, timeout=60).status_code == 200
        assert httpx.get(f"{server.url}/v2/models/{MODEL}").status_code == 401
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{server.url}/").status_code == 200
        assert httpx.get(f"{server.url}/v1/info").json()["token_required"] is True
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        assert (
            client.get_model_metadata(MODEL, headers={"Authorization": "Bearer s3cret-token"})[
                "name"
            ]
            == MODEL
        )
        with pytest.raises(triton.InferenceServerException, match="401"):
            client.get_model_metadata(MODEL)
        client.close()
        ws_url = server.url.replace("http://", "ws://") + "/v1/live"
        with connect(ws_url) as ws:  # frames before the token: closed
            ws.send(PHOTO)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        with connect(ws_url) as ws:
            ws.send(json.dumps({"token": "nope"}))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        with connect(ws_url) as ws:
            ws.send(json.dumps({"token": "s3cret-token", "format": "png", "output": "alpha"}))
            assert json.loads(ws.recv(timeout=10))["ok"]
            ws.send(PHOTO)
            assert isinstance(ws.recv(timeout=60), bytes)
        assert "s3cret-token" not in server.output()
    finally:
        server.stop()


def test_full_queue_answers_503_at_once(serve_root: Path, tmp_path: Path) -> None:
    server = start_server(serve_root, tmp_path, "--max-queue", "1", "--request-timeout", "60")
    try:
        held = _slow_upload(server)  # takes the only place, for up to 60 s
        time.sleep(0.5)
        r = httpx.post(
            f"{server.url}/v1/matte",
            content=PHOTO,
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]
        response = _finish(held)  # the held one completes normally
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        r = httpx.post(
            f"{server.url}/v1/matte",
            content=PHOTO,
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        assert r.status_code == 200
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_then_exits(serve_root: Path, tmp_path: Path) -> None:
    server = start_server(serve_root, tmp_path, "--request-timeout", "60")
    in_flight = _slow_upload(server)
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    parts = urlsplit(server.url)
    refused = False
    for _ in range(100):  # the listening socket closes first
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=1).close()
        except OSError:
            refused = True
            break
        time.sleep(0.1)
    assert refused, "still accepting connections after SIGTERM"
    assert server.alive(), "exited with a request in flight"
    response = _finish(in_flight)
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert b"\x89PNG" in response
    assert server.proc.wait(timeout=60) == 0, server.output()
    assert "stopped" in server.output()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.slow
def test_cli_errors_are_one_line(serve_root: Path, tmp_path: Path) -> None:
    proc = _cli("--model-root", str(tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, "no converted model")
    proc = _cli("--model", str(tmp_path / "missing.xml"), cwd=tmp_path)
    assert_one_line_error(proc, "missing.xml")
    proc = _cli("--model-root", str(serve_root), "--performance", "fastest", cwd=tmp_path)
    assert (
        proc.returncode == 2 and "--performance" in proc.stderr and "Traceback" not in proc.stderr
    )
    proc = _cli("--model-root", str(serve_root), "--fast", "--precision", "FP32", cwd=tmp_path)
    assert proc.returncode == 2 and "--fast" in proc.stderr
    proc = _cli("--model-root", str(tmp_path), "--fast", cwd=tmp_path)
    assert_one_line_error(proc, "modnet-tools convert")  # --fast measures what is converted


def test_port_in_use_is_one_line(serve_root: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _cli("--model-root", str(serve_root), "--port", str(port), cwd=tmp_path)
    assert_one_line_error(proc, "cannot listen", str(port))


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip for a private network namespace",
)
def test_non_loopback_without_token_warns(serve_root: Path, tmp_path: Path) -> None:
    """``--host 0.0.0.0`` inside a private network namespace whose only interface is
    loopback: the server really listens on every address, and nothing beyond this test
    can reach it."""
    for env, warned in (({}, True), ({"MODNET_TOOLS_TOKEN": "t0ken"}, False)):
        log = tmp_path / f"ns-{warned}.log"
        serve = [sys.executable, "-m", "toolkit", "serve", "--model-root", str(serve_root)]
        command = "ip link set lo up && exec " + shlex.join(
            [*serve, "--host", "0.0.0.0", "--port", "0"]
        )
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        if not env:
            full_env.pop("MODNET_TOOLS_TOKEN", None)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["unshare", "-n", "sh", "-c", command],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        try:
            deadline = time.monotonic() + 120
            while "serving" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            text = log.read_text()
            assert "serving" in text, text
            assert ("warning: listening on 0.0.0.0" in text) is warned, text
            if warned:
                assert "no token" in text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()
