"""A real HTTP server on 127.0.0.1 with faults on demand, and model configs pointing at it.

The downloader is tested against real sockets: a ``ThreadingHTTPServer`` serving bytes the
tests create, honouring ``Range`` like a real file server, and misbehaving on request:
dropping the connection mid-body, answering 5xx or 429 first, ignoring Range, sending wrong
bytes, an HTML page, an endless body, answering too slowly, redirecting, and playing both of
Google Drive's confirmation flows. Every request is recorded so tests can assert what the
client actually sent (a ``Range`` header, how many attempts, through a proxy).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

DRIVE_VIRUS_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for
viruses.</p>{form}</div></body></html>"""

DRIVE_FORM = """<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action"
value="Download anyway"/>
<input type="hidden" name="id" value="{id}">
<input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="{uuid}">
</form>"""

DRIVE_QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>
</head><body><p class="uc-error-caption">Sorry, you can't view or download this file at this
time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this file
recently. Please try accessing the file again later.</p></body></html>"""

PLAIN_HTML_PAGE = """<!doctype html>
<html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>"""


@dataclass
class Fault:
    """One misbehaviour, applied to the next ``times`` requests of a path (-1: all of them).

    kinds: ``status`` (answer ``status``, with ``retry_after``), ``drop`` (close the
    connection after ``after`` bytes of the body), ``stall`` (send ``after`` bytes, then wait
    for :meth:`FileServer.release` and close), ``ignore_range`` (always a full 200),
    ``wrong_bytes`` (same size, other bytes), ``html`` (an HTML page, 200), ``slow`` (wait
    ``delay`` s before answering), ``slow_body`` (wait ``delay`` s after ``after`` bytes),
    ``redirect`` (302 to ``target``), ``endless`` (no length, bytes forever),
    ``longer`` (``extra`` bytes more than the file, announced in Content-Length).
    """

    kind: str
    times: int = 1
    status: int = 503
    retry_after: str | None = None
    after: int = 0
    delay: float = 0.0
    body: bytes = b""
    target: str = ""
    extra: int = 1024


@dataclass
class Served:
    data: bytes
    content_type: str = "application/octet-stream"
    faults: list[Fault] = field(default_factory=list)
    chunk: int = 16 * 1024
    chunk_delay: float = 0.0


@dataclass
class Record:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    absolute: bool

    @property
    def range_start(self) -> int | None:
        match = re.match(r"bytes=(\d+)-", self.headers.get("range", ""))
        return int(match.group(1)) if match else None


@dataclass
class DriveFile:
    data: bytes
    flow: str  # direct | cookie | form | quota | form_then_quota
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


class FileServer:
    """The state behind the handler: routes, Drive files, the request log."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Served] = {}
        self.drive: dict[str, DriveFile] = {}
        self.log: list[Record] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.stalled = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(
        self, path: str, data: bytes, *faults: Fault, chunk_delay: float = 0.0, **kw: Any
    ) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.routes[path] = Served(data, faults=list(faults), chunk_delay=chunk_delay, **kw)
        return self.url + path

    def redirect_chain(self, path: str, target: str, hops: int) -> str:
        """``path`` -> ``path/1`` -> ... -> ``target`` (``hops`` redirects in all)."""
        steps = [path] + [f"{path}/{i}" for i in range(1, hops)] + [target]
        for here, there in itertools.pairwise(steps):
            self.routes[here] = Served(b"", faults=[Fault("redirect", times=-1, target=there)])
        return self.url + path

    def add_drive(self, file_id: str, data: bytes, flow: str) -> DriveFile:
        self.drive[file_id] = DriveFile(data, flow)
        return self.drive[file_id]

    def release(self) -> None:
        self.released.set()

    def requests_for(self, path: str) -> list[Record]:
        with self.lock:
            return [r for r in self.log if r.path == path]

    @property
    def drive_url(self) -> str:
        return self.url + "/uc"


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            raw = self.path
            absolute = raw.startswith("http://")
            parts = urlsplit(raw)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            record = Record(
                "GET", parts.path, query, {k.lower(): v for k, v in self.headers.items()}, absolute
            )
            with server.lock:
                server.log.append(record)
            self.close_connection = True
            try:
                if parts.path == "/uc":
                    self._drive_uc(query)
                elif parts.path == "/download" and query.get("id") in server.drive:
                    self._drive_download(query)
                else:
                    self._serve(parts.path)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                pass

        # -- plain files ------------------------------------------------------------------

        def _fault_for(self, served: Served) -> Fault | None:
            with server.lock:
                for fault in served.faults:
                    if fault.times != 0:
                        if fault.times > 0:
                            fault.times -= 1
                        return fault
            return None

        def _serve(self, path: str) -> None:
            served = server.routes.get(path)
            if served is None:
                self._simple(404, b"not found\n")
                return
            fault = self._fault_for(served)
            kind = fault.kind if fault else None
            if fault is not None and kind == "status":
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._simple(fault.status, b"try again later\n", extra)
                return
            if fault is not None and kind == "redirect":
                self._simple(302, b"", {"Location": fault.target})
                return
            if fault is not None and kind == "html":
                page = fault.body or PLAIN_HTML_PAGE.encode()
                self._simple(200, page, {"Content-Type": "text/html; charset=utf-8"})
                return
            if fault is not None and kind == "slow":
                time.sleep(fault.delay)
            data = served.data
            if fault is not None and kind == "wrong_bytes":
                data = fault.body or bytes(b ^ 0xFF for b in served.data)
            if fault is not None and kind == "endless":
                self._endless(served)
                return
            self._send_file(served, data, fault)

        def _send_file(self, served: Served, data: bytes, fault: Fault | None) -> None:
            kind = fault.kind if fault else None
            start = 0
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", "").strip())
            if match and kind != "ignore_range":
                start = int(match.group(1))
                if start >= len(data):
                    self._simple(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
            body = data[start:]
            extra = b""
            if fault is not None and kind == "longer":
                extra = os.urandom(fault.extra)
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", served.content_type)
            self.send_header("Content-Length", str(len(body) + len(extra)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Connection", "close")
            self.end_headers()
            limit = len(body)
            if fault is not None and kind in ("drop", "stall", "slow_body"):
                limit = min(limit, fault.after)
            self._write(body[:limit], served)
            if fault is not None and kind == "stall":
                server.stalled.set()
                server.released.wait(60)
                return
            if fault is not None and kind == "drop":
                return
            if fault is not None and kind == "slow_body":
                time.sleep(fault.delay)
                self._write(body[limit:], served)
                return
            self._write(extra, served)

        def _write(self, data: bytes, served: Served) -> None:
            for i in range(0, len(data), served.chunk):
                self.wfile.write(data[i : i + served.chunk])
                self.wfile.flush()
                if served.chunk_delay:
                    time.sleep(served.chunk_delay)

        def _endless(self, served: Served) -> None:
            self.send_response(200)
            self.send_header("Content-Type", served.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            self._write(served.data, served)
            filler = b"\0" * served.chunk
            for _ in range(1 << 16):  # 1 GiB at most, should a client never stop
                self.wfile.write(filler)

        def _simple(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            hdrs = {"Content-Type": "text/plain", **(headers or {})}
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        # -- Google Drive -----------------------------------------------------------------

        def _drive_file(self, drive: DriveFile) -> None:
            self._send_file(Served(drive.data), drive.data, None)

        def _drive_uc(self, query: dict[str, str]) -> None:
            drive = server.drive.get(query.get("id", ""))
            if drive is None or query.get("export") != "download":
                self._simple(404, b"<html><title>Not Found</title></html>")
                return
            page_headers = {"Content-Type": "text/html; charset=utf-8"}
            if drive.flow == "direct":
                self._drive_file(drive)
            elif drive.flow == "cookie":
                if query.get("confirm") == drive.token:
                    self._drive_file(drive)
                    return
                cookie = f"download_warning_13058876669334088843_{query['id']}={drive.token}"
                page = DRIVE_VIRUS_PAGE.format(form="").encode()
                self._simple(200, page, {**page_headers, "Set-Cookie": cookie + "; Path=/"})
            elif drive.flow in ("form", "form_then_quota"):
                form = DRIVE_FORM.format(
                    action=html.escape(server.url + "/download"),
                    id=html.escape(query["id"]),
                    uuid=drive.uuid,
                )
                self._simple(200, DRIVE_VIRUS_PAGE.format(form=form).encode(), page_headers)
            else:
                self._simple(200, DRIVE_QUOTA_PAGE.encode(), page_headers)

        def _drive_download(self, query: dict[str, str]) -> None:
            drive = server.drive[query["id"]]
            page_headers = {"Content-Type": "text/html; charset=utf-8"}
            good = (
                query.get("export") == "download"
                and query.get("confirm") == "t"
                and query.get("uuid") == drive.uuid
            )
            if drive.flow == "form_then_quota" or not good:
                self._simple(200, DRIVE_QUOTA_PAGE.encode(), page_headers)
                return
            self._drive_file(drive)

    return Handler


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    """A fresh fault-injecting file server on 127.0.0.1 (stopped after the test)."""
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(self_signed_cert: tuple[Path, Path]) -> Iterator[FileServer]:
    """The same file server behind TLS with a certificate no system bundle trusts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_cert)
    server = FileServer(tls=context).start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FileSpec:
    name: str
    data: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha384(self.data).hexdigest()


@dataclass
class ModelSpec:
    """A model config in a tests' models folder, and the files it describes."""

    name: str
    models_dir: Path
    files: list[FileSpec]

    def path_in(self, root: Path, file_name: str | None = None) -> Path:
        return root / "public" / self.name / (file_name or self.files[0].name)

    @property
    def data(self) -> bytes:
        return self.files[0].data


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes (a stand-in for a checkpoint)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def write_model(
    models_dir: Path,
    name: str,
    files: list[tuple[FileSpec, list[Any]]],
) -> ModelSpec:
    """Write ``<models_dir>/<name>.yml`` in model.yml format; each file's sources are
    URLs or ``{"$type": "google_drive", "id": ...}`` mappings, the first one is ``source``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for tf, sources in files:
        entry: dict[str, Any] = {
            "name": tf.name,
            "size": len(tf.data),
            "checksum": tf.checksum,
            "source": sources[0],
        }
        if len(sources) > 1:
            entry["alternative_sources"] = sources[1:]
        entries.append(entry)
    config = {
        "description": f"test model {name}",
        "task_type": "background_matting",
        "files": entries,
        "input_info": [{"name": "input", "shape": [1, 3, 512, 512], "layout": "NCHW"}],
        "model_optimizer_args": ["--input_model=$conv_dir/x.onnx"],
        "framework": "pytorch",
        "license": "https://example.invalid/LICENSE",
    }
    (models_dir / f"{name}.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return ModelSpec(name, models_dir, [tf for tf, _ in files])


@pytest.fixture
def served_model(http_server: FileServer, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``served_model(*faults, size=..., alternatives=[...])`` serves a payload at
    ``/files/<name>.ckpt`` with those faults and writes a config whose source is that URL."""
    counter = iter(range(1000))

    def make(
        *faults: Fault,
        size: int = 200_000,
        name: str | None = None,
        alternatives: list[Any] | None = None,
        chunk_delay: float = 0.0,
        seed: int = 0,
    ) -> ModelSpec:
        model = name or f"test-model-{next(counter)}"
        data = payload(size, seed)
        url = http_server.add(f"/files/{model}.ckpt", data, *faults, chunk_delay=chunk_delay)
        tf = FileSpec(f"{model.replace('-', '_')}.ckpt", data)
        return write_model(tmp_path / "models", model, [(tf, [url, *(alternatives or [])])])

    yield make


def fast_env(server: FileServer | None = None, **extra: str) -> dict[str, str]:
    """Environment for CLI runs: tiny retry waits, no proxy for 127.0.0.1, Drive -> server."""
    env = {
        "MODNET_TOOLS_RETRY_DELAY": "0.01",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }
    if server is not None:
        env["MODNET_TOOLS_GDRIVE_URL"] = server.drive_url
    return env
