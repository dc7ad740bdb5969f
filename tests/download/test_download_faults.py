"""Every server fault, through the real CLI: a verified file, or exit 1 with one clear line
and nothing at the final path.

Each case runs ``modnet-tools download`` in a subprocess on a config (in ``--models-dir``)
whose source is the local fault-injecting server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.download.fixtures_http import (
    Fault,
    FileServer,
    FileSpec,
    ModelSpec,
    fast_env,
    free_port,
    payload,
    write_model,
)
from tests.helpers import assert_one_line_error


@dataclass
class Case:
    faults: list[Fault]
    ok: bool
    needles: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    max_requests: int | None = None  # how many GETs the source may receive
    resumed: bool = False  # a later request must carry Range: bytes=N- with N > 0
    stdout: str = ""


FAST = ("--read-timeout", "0.6", "--connect-timeout", "2")

CASES: dict[str, Case] = {
    "dropped mid-body, then resumed": Case(
        [Fault("drop", after=80_000)], ok=True, resumed=True, max_requests=2
    ),
    "dropped on every attempt": Case(
        [Fault("drop", times=-1, after=80_000)],
        ok=False,
        needles=("broke off", "after 2 attempts"),
        args=("--num-attempts", "2"),
    ),
    "500 then success": Case([Fault("status", status=500)], ok=True, max_requests=2),
    "503 twice then success": Case([Fault("status", times=2, status=503)], ok=True),
    "503 for ever": Case(
        [Fault("status", times=-1, status=503)],
        ok=False,
        needles=("HTTP 503", "after 3 attempts"),
        max_requests=3,
    ),
    "429 with Retry-After": Case(
        [Fault("status", status=429, retry_after="1")],
        ok=True,
        stdout="Retry-After",
        max_requests=2,
    ),
    "429 asking for too long a wait": Case(
        [Fault("status", times=-1, status=429, retry_after="86400")],
        ok=False,
        needles=("HTTP 429", "asked to wait 86400 s"),
        max_requests=1,
    ),
    "Range ignored after a drop": Case(
        [Fault("drop", after=80_000), Fault("ignore_range", times=-1)],
        ok=True,
        stdout="ignored Range",
    ),
    "wrong bytes (not retried)": Case(
        [Fault("wrong_bytes", times=-1)], ok=False, needles=("sha384",), max_requests=1
    ),
    "HTML page instead of the file": Case(
        [Fault("html", times=-1)],
        ok=False,
        needles=("HTML page", "Just a moment"),
        max_requests=1,
    ),
    "slower than the read timeout, then fine": Case(
        [Fault("slow", delay=3.0)], ok=True, args=FAST, max_requests=2
    ),
    "slower than the read timeout every time": Case(
        [Fault("slow", times=-1, delay=3.0)],
        ok=False,
        needles=("timed out",),
        args=(*FAST, "--num-attempts", "2"),
    ),
    "stalls mid-body, then resumed": Case(
        [Fault("slow_body", after=70_000, delay=3.0)], ok=True, args=FAST, resumed=True
    ),
    "endless body (cut off)": Case(
        [Fault("endless", times=-1)], ok=False, needles=("more than",), max_requests=1
    ),
    "longer than announced size": Case(
        [Fault("longer", times=-1)],
        ok=False,
        needles=("bytes, expected 200000",),
        max_requests=1,
    ),
    "404": Case(
        [Fault("status", times=-1, status=404)], ok=False, needles=("HTTP 404",), max_requests=1
    ),
}


def _final_and_leftovers(model: ModelSpec, root: Path) -> tuple[Path, list[Path]]:
    final = model.path_in(root)
    folder = final.parent
    leftovers = sorted(p for p in folder.glob(".*")) if folder.is_dir() else []
    return final, leftovers


@pytest.mark.parametrize("case_id", list(CASES))
def test_fault_ends_verified_or_one_line_error(
    case_id: str, http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path
) -> None:
    case = CASES[case_id]
    model: ModelSpec = served_model(*case.faults)
    out = tmp_path / "out"
    proc = run_cli(
        "download",
        "--name",
        model.name,
        "--models-dir",
        model.models_dir,
        "-o",
        out,
        *case.args,
        env=fast_env(http_server),
    )
    final, leftovers = _final_and_leftovers(model, out)
    gets = http_server.requests_for(f"/files/{model.name}.ckpt")
    if case.ok:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert final.read_bytes() == model.data
        assert leftovers == []  # no partial or lock file left beside it
        if case.resumed:
            assert any((r.range_start or 0) > 0 for r in gets[1:]), [r.headers for r in gets]
        assert case.stdout in proc.stdout
    else:
        assert_one_line_error(proc, model.name, *case.needles)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not final.exists()
        assert "FAILED:" in proc.stdout and model.name in proc.stdout
        assert [p for p in leftovers if p.suffix == ".lock"] == []
    if case.max_requests is not None:
        assert len(gets) <= case.max_requests, [r.headers for r in gets]


def test_redirect_chain_is_followed(
    http_server: FileServer, run_cli: RunCli, tmp_path: Path
) -> None:
    data = payload(150_000, seed=3)
    http_server.add("/real/file.ckpt", data)
    url = http_server.redirect_chain("/hop", "/real/file.ckpt", hops=4)
    model = write_model(tmp_path / "models", "redirected", [(FileSpec("r.ckpt", data), [url])])
    proc = run_cli(
        "download", "--name", "redirected", "--models-dir", model.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "o").read_bytes() == data
    assert len(http_server.requests_for("/hop")) == 1
    assert len(http_server.requests_for("/real/file.ckpt")) == 1


def test_redirect_loop_fails_cleanly(
    http_server: FileServer, run_cli: RunCli, tmp_path: Path
) -> None:
    data = payload(1000)
    http_server.redirect_chain("/loop", "/loop", hops=1)
    url = http_server.url + "/loop"
    model = write_model(tmp_path / "models", "looping", [(FileSpec("l.ckpt", data), [url])])
    proc = run_cli(
        "download", "--name", "looping", "--models-dir", model.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    assert_one_line_error(proc, "too many redirects")
    assert not model.path_in(tmp_path / "o").exists()


def test_connection_refused_fails_cleanly(run_cli: RunCli, tmp_path: Path) -> None:
    data = payload(1000)
    url = f"http://127.0.0.1:{free_port()}/nothing-listens-here.ckpt"
    model = write_model(tmp_path / "models", "refused", [(FileSpec("x.ckpt", data), [url])])
    proc = run_cli(
        "download", "--name", "refused", "--models-dir", model.models_dir, "-o", tmp_path / "o",
        "--num-attempts", "2", env=fast_env(),
    )  # fmt: skip
    assert_one_line_error(proc, "refused", "after 2 attempts")
    assert not model.path_in(tmp_path / "o").exists()


@dataclass
class DriveCase:
    flow: str
    ok: bool
    needles: tuple[str, ...] = ()
    hits: list[str] = field(default_factory=list)


DRIVE_CASES = {
    "no confirmation needed": DriveCase("direct", ok=True, hits=["/uc"]),
    "cookie confirmation (download_warning -> confirm=)": DriveCase(
        "cookie", ok=True, hits=["/uc", "/uc"]
    ),
    "HTML form confirmation (id, export, confirm, uuid)": DriveCase(
        "form", ok=True, hits=["/uc", "/download"]
    ),
    "quota exceeded": DriveCase(
        "quota", ok=False, needles=("Google Drive", "quota is exceeded"), hits=["/uc"]
    ),
    "quota page after the confirmation": DriveCase(
        "form_then_quota",
        ok=False,
        needles=("after the download confirmation", "quota is exceeded"),
        hits=["/uc", "/download"],
    ),
}


@pytest.mark.parametrize("case_id", list(DRIVE_CASES))
def test_google_drive_flows(
    case_id: str, http_server: FileServer, run_cli: RunCli, tmp_path: Path
) -> None:
    case = DRIVE_CASES[case_id]
    data = payload(120_000, seed=7)
    file_id = "1Nf1ZxeJZJL8Qx9KadcYYyEmmlKhTADxX"
    drive = http_server.add_drive(file_id, data, case.flow)
    model = write_model(
        tmp_path / "models",
        "drive-model",
        [(FileSpec("m.ckpt", data), [{"$type": "google_drive", "id": file_id}])],
    )
    proc = run_cli(
        "download", "--name", "drive-model", "--models-dir", model.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    final = model.path_in(tmp_path / "o")
    assert [r.path for r in http_server.log] == case.hits
    if case.ok:
        assert proc.returncode == 0, proc.stderr
        assert final.read_bytes() == data
        last = http_server.log[-1]
        if case.flow == "cookie":
            assert last.query.get("confirm") == drive.token
            assert drive.token in last.headers.get("cookie", "")
        if case.flow == "form":
            assert last.query == {
                "id": file_id,
                "export": "download",
                "confirm": "t",
                "uuid": drive.uuid,
            }
    else:
        assert_one_line_error(proc, *case.needles)
        assert not final.exists()


def test_wrong_source_moves_on_to_alternative(
    http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path
) -> None:
    """A checksum mismatch is not retried from the same source: the next source is used."""
    good = payload(200_000, seed=0)
    http_server.add("/good/model.ckpt", good)
    model = served_model(
        Fault("wrong_bytes", times=-1), alternatives=[http_server.url + "/good/model.ckpt"]
    )
    proc = run_cli(
        "download", "--name", model.name, "--models-dir", model.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "o").read_bytes() == good
    assert len(http_server.requests_for(f"/files/{model.name}.ckpt")) == 1
    assert len(http_server.requests_for("/good/model.ckpt")) == 1
    assert "sha384" in proc.stdout and "trying the next source" in proc.stdout


def test_every_source_failing_names_each_reason(
    http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path
) -> None:
    http_server.add("/other.ckpt", b"x", Fault("html", times=-1))
    model = served_model(
        Fault("status", times=-1, status=404), alternatives=[http_server.url + "/other.ckpt"]
    )
    proc = run_cli(
        "download", "--name", model.name, "--models-dir", model.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    assert_one_line_error(proc, "HTTP 404", "HTML page", "/other.ckpt")
    assert not model.path_in(tmp_path / "o").exists()
