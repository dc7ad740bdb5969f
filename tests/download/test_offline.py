"""``download`` on a machine without a network (issue 11, item 18): a host name that does not
resolve fails at once instead of three attempts with backoff per URL, OMZ's optional reference
``.py`` files are notes rather than errors, the one error says what to do next, and
``--offline`` prints no blank lines."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunCli
from tests.download.fixtures_http import FileServer, FileSpec, fast_env, payload, write_model

#: Reserved by RFC 2606: never resolves, on any network.
NOWHERE = "http://modnet-tools-test.invalid"
NO_PROXY = {k: "" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}


def _offline_model(models: Path, ckpt_url: str | None = None) -> tuple[str, list[FileSpec]]:
    files = [
        (FileSpec("modnet_onnx.py", b"print('reference')\n"), [f"{NOWHERE}/modnet_onnx.py"]),
        (FileSpec("src/models/x.py", b"x = 1\n"), [f"{NOWHERE}/src/models/x.py"]),
        (
            FileSpec("offline_model.ckpt", payload(5000)),
            [ckpt_url or f"{NOWHERE}/a.ckpt", "http://other-host.invalid/b.ckpt"],
        ),
    ]
    spec = write_model(models, "offline-model", files)
    return spec.name, spec.files


def test_unresolvable_hosts_fail_fast_with_one_error_that_says_what_next(
    run_cli: RunCli, tmp_path: Path
) -> None:
    name, _ = _offline_model(tmp_path / "models")
    proc = run_cli(
        "download", "--name", name, "--models-dir", tmp_path / "models", "-o", tmp_path / "o",
        env={**fast_env(), **NO_PROXY, "MODNET_TOOLS_RETRY_DELAY": "5"},
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr  # the checkpoint's; the .py files are optional
    (line,) = errors
    assert "offline_model.ckpt" in line
    assert "cannot resolve the host name modnet-tools-test.invalid" in line
    assert "cannot resolve the host name other-host.invalid" in line
    for step in ("--mirror", "--offline", "--cache-dir", "modnet-tools random-checkpoint"):
        assert step in line, step
    # No retries with backoff for a name that does not resolve (5 s each would show here).
    assert "attempt" not in proc.stdout + proc.stderr and "after" not in line
    notes = [ln for ln in proc.stdout.splitlines() if ln.startswith("skipped the optional")]
    assert [n.split()[3] for n in notes] == ["modnet_onnx.py", "src/models/x.py"]


def test_optional_files_do_not_fail_a_model_whose_checkpoint_arrives(
    run_cli: RunCli, http_server: FileServer, tmp_path: Path
) -> None:
    data = payload(5000)
    url = http_server.add("/a.ckpt", data)
    name, _ = _offline_model(tmp_path / "models", ckpt_url=url)
    proc = run_cli(
        "download", "--name", name, "--models-dir", tmp_path / "models", "-o", tmp_path / "o",
        env={**fast_env(), **NO_PROXY},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "o" / "public" / name / "offline_model.ckpt").read_bytes() == data
    assert proc.stdout.count("skipped the optional") == 2


def test_offline_prints_no_blank_lines(run_cli: RunCli, tmp_path: Path) -> None:
    name, _ = _offline_model(tmp_path / "models")
    proc = run_cli(
        "download", "--name", name, "--models-dir", tmp_path / "models", "-o", tmp_path / "o",
        "--offline", env={**fast_env(), **NO_PROXY},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "" not in proc.stdout.splitlines(), proc.stdout
    assert "" not in proc.stderr.splitlines(), proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert "not available offline" in line and "--mirror" in line
