"""Fixtures for the serve area: the real server, started as users start it.

``python -m toolkit serve --port 0`` in a subprocess on 127.0.0.1, on the tame checkpoint's IR
laid out as ``convert`` writes it; the test reads the URL from the line the server prints.
One default server is shared by the module's tests (starting one compiles the IR: seconds);
tests that need other options start their own with :func:`start_server`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "modnet-webcam-portrait-matting"
_URL = re.compile(r" on (http://127\.0\.0\.1:\d+)")


@dataclass
class ServerProcess:
    """A running ``modnet-tools serve``; ``url`` is its base URL, ``log`` its stderr."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    args: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    root: Path, log_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> ServerProcess:
    """Start the server with ``--model-root root --port 0`` plus ``args``; wait until it listens."""
    log = log_dir / f"serve-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("MODNET_TOOLS_HOME", None)
    if env is None or "MODNET_TOOLS_TOKEN" not in env:
        full_env.pop("MODNET_TOOLS_TOKEN", None)
    cmd = [
        sys.executable,
        "-m",
        "toolkit",
        "serve",
        "--model-root",
        str(root),
        "--port",
        "0",
        *args,
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=full_env, cwd=log_dir
        )
    server = ServerProcess(proc, log, args=list(args))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _URL.search(server.output())
        if match:
            server.url = match.group(1)
            return server
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {server.output()}")
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"the server did not start in {timeout} s: {server.output()}")


@pytest.fixture(scope="session")
def serve_root(converted_tame) -> Path:  # type: ignore[no-untyped-def]
    """A model root holding the tame checkpoint's FP32 IR (and FP16) where serve looks."""
    return Path(converted_tame.root)


@pytest.fixture(scope="module")
def server(serve_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server with small limits so that the bad-input tests are quick: 24 MiB uploads
    (room for the model's tensor as JSON, about 19 MB), 4 MP images, 3 s per request."""
    srv = start_server(
        serve_root,
        tmp_path_factory.mktemp("serve"),
        "--max-upload-mb",
        "24",
        "--max-pixels",
        "4000000",
        "--request-timeout",
        "3",
    )
    yield srv
    srv.stop()
