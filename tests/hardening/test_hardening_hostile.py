"""Hostile inputs: files and servers built to do harm, through the real commands.

* Checkpoints whose pickle runs code when unpickled (``os.system``, ``exec``, ``eval``,
  ``subprocess.Popen``, one of our own functions that writes files, a nested ``torch.load``
  that would skip ``weights_only``), in both ``torch.save`` formats, bare or hidden inside a
  state_dict: refused by ``check-checkpoint`` and ``convert --checkpoint``, and the file the
  payload would create is never created. Each payload is first shown to be live.
* model.yml files whose file names try to leave the output folder (``../``, absolute paths,
  backslashes, drive letters, a symlink planted in the output tree), through
  ``download --models-dir``: refused before any request, nothing written outside.
* Configs with a non-numeric size (and YAML built to hurt the parser: deep nesting, alias
  bombs, Python tags).
* Servers that never stop: an endless body, an endless gzip stream, an absurd
  Content-Length, endless headers, a header line that never ends, a server that says nothing.
  The download is cut off promptly, nothing reaches the final path.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import io
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.download.fixtures_http import FileServer, FileSpec, write_model
from tests.download.fixtures_http import payload as file_bytes
from tests.hardening.fixtures import assert_clean_failure, leftovers, run_tool, visible_files

torch = pytest.importorskip("torch")

# --- code-executing checkpoints ------------------------------------------------------------------


@dataclass
class Payload:
    """An object whose unpickling calls ``call(*args)``; ``touch(marker)`` says what to build."""

    call: Callable[..., Any]
    args: tuple[Any, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.call, self.args)


def _payloads(marker: Path) -> dict[str, Payload]:
    """Each way a pickle can run code; every one creates ``marker`` if it ever runs."""
    import subprocess as sp

    from toolkit.fsutil import atomic_write_bytes

    code = f"open({str(marker)!r}, 'w').write('pwned')"
    nested = io.BytesIO()
    torch.save(
        {"x": Payload(os.system, (f"touch {marker}",))},
        nested,
        _use_new_zipfile_serialization=False,
    )
    return {
        "os.system": Payload(os.system, (f"touch {marker}",)),
        "exec": Payload(builtins.exec, (code,)),
        "eval": Payload(builtins.eval, (f"__import__('pathlib').Path({str(marker)!r}).touch()",)),
        "subprocess.Popen": Payload(sp.Popen, (["touch", str(marker)],)),
        "toolkit's own writer": Payload(atomic_write_bytes, (str(marker), b"pwned")),
        "nested torch.load": Payload(torch.storage._load_from_bytes, (nested.getvalue(),)),
    }


PAYLOADS = list(_payloads(Path("/nonexistent")).keys())
WRAPPINGS = ["bare", "in a state_dict", "under state_dict"]


def _wrap(obj: Payload, how: str) -> Any:
    if how == "bare":
        return obj
    state = {"module.backbone.model.features.0.0.weight": torch.zeros(1), "evil": obj}
    return state if how == "in a state_dict" else {"state_dict": state, "epoch": 3}


def evil_checkpoint(folder: Path, payload: str, how: str, zip_format: bool) -> tuple[Path, Path]:
    """Write the checkpoint; return it and the marker its payload would create."""
    marker = folder / f"pwned-{payload.replace(' ', '_')}"
    path = folder / "evil.ckpt"
    torch.save(
        _wrap(_payloads(marker)[payload], how), path, _use_new_zipfile_serialization=zip_format
    )
    return path, marker


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_payload_is_live(payload: str, tmp_path: Path) -> None:
    """The attacks are real: an ordinary unpickler runs each of them."""
    marker = tmp_path / "live"
    obj = _payloads(marker)[payload]
    with contextlib.suppress(Exception):  # the nested load raises after running its payload
        pickle.loads(pickle.dumps(obj))
    deadline = time.monotonic() + 10  # Popen and os.system finish asynchronously/at once
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the {payload} payload did not run under plain pickle"


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
@pytest.mark.parametrize("how", WRAPPINGS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_code_executing_checkpoints_are_refused_by_the_loader(
    payload: str, how: str, zip_format: bool, tmp_path: Path
) -> None:
    from toolkit.errors import CheckpointError
    from toolkit.model.checkpoint import load_state_dict

    path, marker = evil_checkpoint(tmp_path, payload, how, zip_format)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "refused" in message or "not loaded" in message or "nothing" in message, message
    time.sleep(0.1)
    assert not marker.exists()


def _cli_cases() -> list[Any]:
    """Every payload through both commands; the quick run takes two, CI's slow run all."""
    quick = {("os.system", "legacy"), ("nested torch.load", "zip")}
    cases = []
    for attack in PAYLOADS:
        for fmt in ("legacy", "zip"):
            marks = () if (attack, fmt) in quick else (pytest.mark.slow,)
            cases.append(pytest.param(attack, fmt, marks=marks, id=f"{attack}-{fmt}"))
    return cases


@pytest.mark.parametrize(("payload", "fmt"), _cli_cases())
def test_code_executing_checkpoints_through_check_and_convert(
    payload: str, fmt: str, tmp_path: Path
) -> None:
    path, marker = evil_checkpoint(tmp_path, payload, "in a state_dict", fmt == "zip")
    check = run_tool("check-checkpoint", path, cwd=tmp_path)
    assert_clean_failure(check, "refused", str(path))
    out = tmp_path / "out"
    convert = run_tool("convert", "--checkpoint", path, "-o", out, "--no-verify", cwd=tmp_path)
    assert_clean_failure(convert, "refused", str(path))
    assert len(convert.stderr.strip().splitlines()) == 1, convert.stderr
    time.sleep(0.1)
    assert not marker.exists()
    assert visible_files(out) == [] and leftovers(out) == []


# --- model.yml file names that try to leave the output folder ------------------------------------

ESCAPES = {
    "parent": "../escaped.bin",
    "grandparent": "../../escaped.bin",
    "deep parent": "sub/../../../escaped.bin",
    "absolute": "/tmp/modnet-hardening-escaped.bin",
    "absolute in tree": "{root}/escaped.bin",
    "backslash parent": "..\\escaped.bin",
    "backslash absolute": "\\escaped.bin",
    "drive letter": "C:\\escaped.bin",
    "drive relative": "C:escaped.bin",
    "dot segment": "./escaped.bin",
    "empty segment": "sub//escaped.bin",
    "nul byte": "escaped\x00.bin",
}


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_escaping_file_names_are_refused_before_any_request(
    kind: str, http_server: FileServer, tmp_path: Path
) -> None:
    root = tmp_path / "a" / "b"
    name = ESCAPES[kind].format(root=root)
    data = file_bytes(1000)
    url = http_server.add("/f.bin", data)
    models = tmp_path / "models"
    write_model(models, "escape-model", [(FileSpec(name, data), [url])])
    out = root / "out"
    proc = run_tool(
        "download", "--name", "escape-model", "--models-dir", models, "-o", out, cwd=tmp_path
    )
    assert_clean_failure(proc, "escape-model.yml", "files.0.name")
    assert http_server.log == []
    assert visible_files(tmp_path / "a") == []
    assert not Path("/tmp/modnet-hardening-escaped.bin").exists()
    info = run_tool("info", "--models-dir", models, "--name", "escape-model", cwd=tmp_path)
    assert_clean_failure(info, "files.0.name")


def test_a_tilde_is_a_folder_name_not_the_home_directory(
    http_server: FileServer, tmp_path: Path
) -> None:
    data = file_bytes(1000)
    url = http_server.add("/f.bin", data)
    models = tmp_path / "models"
    write_model(models, "tilde-model", [(FileSpec("~/tilde-escaped.bin", data), [url])])
    out = tmp_path / "out"
    proc = run_tool(
        "download", "--name", "tilde-model", "--models-dir", models, "-o", out, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "public" / "tilde-model" / "~" / "tilde-escaped.bin").read_bytes() == data
    assert not (Path.home() / "tilde-escaped.bin").exists()


def test_a_symlink_planted_in_the_output_tree_is_not_followed_out(
    http_server: FileServer, tmp_path: Path
) -> None:
    """``sub/x.bin`` is a fine name, but the output tree's ``sub`` is a link to elsewhere."""
    data = file_bytes(1000)
    url = http_server.add("/f.bin", data)
    models = tmp_path / "models"
    write_model(models, "link-model", [(FileSpec("sub/x.bin", data), [url])])
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (out / "public" / "link-model").mkdir(parents=True)
    (out / "public" / "link-model" / "sub").symlink_to(outside)
    proc = run_tool(
        "download", "--name", "link-model", "--models-dir", models, "-o", out, cwd=tmp_path
    )
    assert_clean_failure(proc, "outside")
    assert list(outside.iterdir()) == []
    assert http_server.log == []


def test_a_model_name_that_leaves_the_tree_is_refused_by_convert(tmp_path: Path) -> None:
    for name in ("../../escaped", "/tmp/escaped", "a/../../b"):
        proc = run_tool(
            "convert", "--checkpoint", tmp_path / "x.ckpt", "--model-name", name, "-o",
            tmp_path / "out", "--dry-run", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode in (1, 2), proc.stderr
        assert "Traceback" not in proc.stderr and "error: unexpected" not in proc.stderr
        assert "unsafe" in proc.stderr or "escape" in proc.stderr or "outside" in proc.stderr
    assert visible_files(tmp_path) == []


def test_an_onnx_output_file_outside_the_tree_stays_inside(tmp_path: Path) -> None:
    """OMZ's ``--output-file=`` in conversion_to_onnx_args only gives the ONNX its name."""
    config = yaml.safe_load(
        (
            Path(__file__).parents[2] / "model_configs" / "modnet-webcam-portrait-matting.yml"
        ).read_text(encoding="utf-8")
    )
    config["conversion_to_onnx_args"] = ["--output-file=../../../../tmp/escaped.onnx"]
    models = tmp_path / "models"
    models.mkdir()
    (models / "bent-model.yml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    proc = run_tool(
        "convert", "--name", "bent-model", "--models-dir", models, "--checkpoint",
        tmp_path / "x.ckpt", "-o", out, "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"-> {out / 'public' / 'bent-model' / 'escaped.onnx'}" in proc.stdout
    assert "/tmp/escaped.onnx ->" not in proc.stdout


# --- configs that are not what they claim ------------------------------------------------------------

BAD_SIZES = ["abc", "'1024'", "1.5e3", "12.5", "-1", "0", "true", "null", "[1]", ".nan"]
QUICK_SIZES = {"abc", "'1024'", ".nan"}  # the rest run in CI's slow pass (and, in-process, in
# test_hardening_properties.py's test_a_non_numeric_or_non_positive_size_is_refused)


@pytest.mark.parametrize(
    "size",
    [pytest.param(s, marks=() if s in QUICK_SIZES else (pytest.mark.slow,)) for s in BAD_SIZES],
)
def test_a_non_numeric_size_names_file_and_field(size: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model(models, "size-model", [(FileSpec("m.ckpt", b"x"), ["http://127.0.0.1:9/m"])])
    config = models / "size-model.yml"
    config.write_text(config.read_text().replace("size: 1", f"size: {size}", 1))
    for command in ("download", "info"):
        proc = run_tool(command, "--name", "size-model", "--models-dir", models, cwd=tmp_path)
        assert_clean_failure(proc, str(config), "files.0.size")
    assert visible_files(tmp_path / "cache") == []


HOSTILE_YAML = {
    "nested 100k deep": "[" * 100_000,
    "nested maps": "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 3000)),
    "alias bomb": "\n".join(
        ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
        + ["files: *a9", "description: *a9"]
    ),
    "python object tag": "!!python/object/apply:os.system ['touch pwned']",
    "python name tag": "description: !!python/name:os.system\n",
    "binary junk": "\x00\x01\x02\ufffd",
    "a list": "- 1\n- 2\n",
    "an empty file": "",
}


@pytest.mark.parametrize("kind", list(HOSTILE_YAML))
def test_hostile_yaml_is_a_config_error_in_one_line(kind: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    config = models / "bad-model.yml"
    config.write_text(HOSTILE_YAML[kind], encoding="utf-8")
    proc = run_tool("info", "--models-dir", models, "--name", "bad-model", cwd=tmp_path, timeout=60)
    assert_clean_failure(proc, str(config))
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "pwned").exists()


# --- servers that never stop -------------------------------------------------------------------------


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection runs ``behaviour(sock)`` and counts
    the bytes it managed to send (so a test can prove the client stopped reading)."""

    def __init__(self, behaviour: Callable[[socket.socket, RawServer], None]) -> None:
        self.behaviour = behaviour
        self.sent = 0
        self.connections = 0
        self.stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/model.ckpt"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                conn.recv(65536)  # the request
                self.behaviour(conn, self)
            except OSError:
                pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self._sock.close()


def _forever(conn: socket.socket, server: RawServer, chunk: bytes) -> None:
    deadline = time.monotonic() + 60
    while not server.stop.is_set() and time.monotonic() < deadline:
        server.send(conn, chunk)


def _endless_body(conn: socket.socket, server: RawServer) -> None:
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    _forever(conn, server, b"\0" * 65536)


def _endless_html(conn: socket.socket, server: RawServer) -> None:
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>")
    _forever(conn, server, b"<p>lol</p>" * 6000)


_BOMB = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB in about 64 KiB


def _gzip_bomb(conn: socket.socket, server: RawServer) -> None:
    server.send(
        conn,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    server.send(conn, _BOMB)


def _absurd_length(conn: socket.socket, server: RawServer) -> None:
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\n\r\n")
    _forever(conn, server, b"\0" * 65536)


def _endless_headers(conn: socket.socket, server: RawServer) -> None:
    server.send(conn, b"HTTP/1.1 200 OK\r\n")
    _forever(conn, server, b"X-Lol: lol\r\n" * 100)


def _endless_header_line(conn: socket.socket, server: RawServer) -> None:
    server.send(conn, b"HTTP/1.1 200 OK\r\nX-Lol: ")
    _forever(conn, server, b"l" * 65536)


def _silent(conn: socket.socket, server: RawServer) -> None:
    server.stop.wait(60)


@dataclass(frozen=True)
class HostileServer:
    behaviour: Callable[[socket.socket, RawServer], None]
    needle: str
    args: tuple[str, ...] = ()


SIZE = 200_000
SERVERS = {
    "endless body": HostileServer(_endless_body, "more than the expected"),
    "endless HTML page": HostileServer(_endless_html, "HTML"),
    "gzip bomb": HostileServer(_gzip_bomb, "more than the expected"),
    "absurd Content-Length": HostileServer(_absurd_length, "expected 200000"),
    "endless headers": HostileServer(_endless_headers, "model.ckpt"),
    "endless header line": HostileServer(_endless_header_line, "model.ckpt"),
    "silent server": HostileServer(_silent, "timed out", ("--read-timeout", "1")),
}


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    servers: list[RawServer] = []

    def make(behaviour: Callable[[socket.socket, RawServer], None]) -> RawServer:
        servers.append(RawServer(behaviour))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("kind", list(SERVERS))
def test_a_server_that_never_stops_is_cut_off(
    kind: str, raw_server: Callable[..., RawServer], tmp_path: Path
) -> None:
    case = SERVERS[kind]
    server = raw_server(case.behaviour)
    data = file_bytes(SIZE)
    models = tmp_path / "models"
    write_model(models, "hostile-model", [(FileSpec("model.ckpt", data), [server.url])])
    out = tmp_path / "out"
    started = time.monotonic()
    proc = run_tool(
        "download", "--name", "hostile-model", "--models-dir", models, "-o", out,
        "--num-attempts", "2", *case.args, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert_clean_failure(proc, "hostile-model", case.needle)
    assert time.monotonic() - started < 100  # not a timing claim: a guard against "forever"
    assert not (out / "public" / "hostile-model" / "model.ckpt").exists()
    assert [p for p in leftovers(out) if p.stat().st_size > SIZE] == []
    # The client stopped reading: at most a few socket buffers past the expected size per try.
    assert server.sent < server.connections * (SIZE + 16 * 2**20), (server.sent, server.connections)


def test_a_partial_download_cannot_be_grown_by_a_lying_server(
    raw_server: Callable[..., RawServer], tmp_path: Path
) -> None:
    """A server that answers a resume (Range) with the endless stream is cut off too, and the
    partial file left by the earlier run never grows past the file's size."""
    server = raw_server(_endless_body)
    data = file_bytes(SIZE)
    models = tmp_path / "models"
    write_model(models, "resumed-model", [(FileSpec("model.ckpt", data), [server.url])])
    folder = tmp_path / "out" / "public" / "resumed-model"
    folder.mkdir(parents=True)
    from toolkit.download.engine import partial_path

    partial = partial_path(folder / "model.ckpt", FileSpec("model.ckpt", data).checksum)
    partial.write_bytes(data[: SIZE // 2])
    proc = run_tool(
        "download", "--name", "resumed-model", "--models-dir", models, "-o", tmp_path / "out",
        "--num-attempts", "1", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert_clean_failure(proc, "resumed-model")
    assert not (folder / "model.ckpt").exists()
    assert not partial.exists() or partial.stat().st_size <= SIZE
