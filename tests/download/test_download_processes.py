"""Real processes: two downloads of one file at once, and a download killed half-way.

A lock makes concurrent runs take turns on a file (the second finds it verified and keeps
it); a killed or interrupted run leaves only its partial file, which the next run continues
with ``Range`` instead of starting again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.download.fixtures_http import Fault, FileServer, ModelSpec, fast_env

CHUNK = 64 * 1024  # the engine's read size: a stall at a multiple of it is visible on disk


def spawn(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    full_env.pop("MODNET_TOOLS_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=cwd,
    )


def download_args(model: ModelSpec, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["download", "--name", model.name, "--models-dir", model.models_dir, "-o", out, *extra]


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part")) if folder.is_dir() else []


@pytest.mark.parametrize("shared", ["output dir", "cache only"])
def test_two_processes_fetching_the_same_file_do_not_corrupt_it(
    shared: str, http_server: FileServer, served_model, tmp_path: Path
) -> None:
    # ~1 MB sent in 16 KiB pieces with a pause between them: long enough to overlap.
    model = served_model(size=1_000_000, chunk_delay=0.01)
    cache = tmp_path / "cache"
    outs = (
        [tmp_path / "out", tmp_path / "out"]
        if shared == "output dir"
        else [tmp_path / "out1", tmp_path / "out2"]
    )
    env = fast_env(http_server)
    procs = [
        spawn(*download_args(model, out, "--cache-dir", cache), env=env, cwd=tmp_path)
        for out in outs
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert err == ""
    for out in outs:
        assert model.path_in(out).read_bytes() == model.data
        assert partials(model.path_in(out).parent) == []
    entry = cache / "1" / model.files[0].checksum[:2] / model.files[0].checksum[2:]
    assert entry.read_bytes() == model.data
    # One process downloaded; the other waited for the lock, then kept or copied its result.
    assert len(http_server.requests_for(f"/files/{model.name}.ckpt")) == 1
    assert not list((cache / "1" / "staging").iterdir())


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_download_leaves_no_final_file_and_resumes(
    how: str, http_server: FileServer, served_model, tmp_path: Path
) -> None:
    stall_at = 5 * CHUNK
    model = served_model(Fault("stall", after=stall_at), size=1_000_000)
    out = tmp_path / "out"
    final = model.path_in(out)
    env = fast_env(http_server)
    proc = spawn(*download_args(model, out), env=env, cwd=tmp_path)
    try:
        wait_for(lambda: any(p.stat().st_size == stall_at for p in partials(final.parent)))
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        http_server.release()
    if how == "SIGINT":
        assert proc.returncode == 130
        assert "Traceback" not in err and "error: interrupted" in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    [partial] = partials(final.parent)
    assert partial.stat().st_size == stall_at

    rerun = subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, download_args(model, out))],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert final.read_bytes() == model.data
    assert partials(final.parent) == []
    gets = http_server.requests_for(f"/files/{model.name}.ckpt")
    assert [g.range_start for g in gets] == [None, stall_at]
