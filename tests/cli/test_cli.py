"""The command line's contract: help and version, exit codes, one-line usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import __version__
from toolkit.cli import translate_aliases

COMMANDS = [
    "download",
    "info",
    "convert",
    "quantize",
    "infer",
    "benchmark",
    "evaluate",
    "check-checkpoint",
    "random-checkpoint",
]


def test_version(run_cli) -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"modnet-tools {__version__}"


def test_help_lists_every_command(run_cli) -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout, command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run_cli, command: str) -> None:
    proc = run_cli(command, "-h")
    assert proc.returncode == 0, proc.stderr
    assert f"modnet-tools {command}" in proc.stdout
    assert proc.stderr == ""


def test_no_command_prints_help_and_exits_2(run_cli) -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert "Usage" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def _assert_usage_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "╭" not in proc.stderr and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["infer"], ["Missing argument", "modnet-tools infer --help"]),
        (["download", "--no-such-flag"], ["No such option: --no-such-flag"]),
        (["no-such-command"], ["No such command", "no-such-command"]),
        (["download", "--num-attempts", "many"], ["--num-attempts", "integer"]),
        (["infer", "x.png", "--jobs", "-3"], ["--jobs"]),
        (["evaluate", "--images"], ["--images", "requires an argument"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(run_cli, args: list[str], needles) -> None:
    _assert_usage_error(run_cli(*args), *needles)


def test_a_missing_path_option_is_one_line_naming_it(run_cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = run_cli("download", "--models-dir", missing)
    _assert_usage_error(proc, "models dir", str(missing))


def test_omz_underscore_spellings_are_accepted() -> None:
    args = ["download", "--output_dir=out", "--cache_dir", "c", "--num_attempts=2", "--", "x_y"]
    assert translate_aliases(args) == [
        "download",
        "--output-dir=out",
        "--cache-dir",
        "c",
        "--num-attempts=2",
        "--",
        "x_y",
    ]


def test_underscore_alias_runs(run_cli, tmp_path: Path) -> None:
    proc = run_cli("download", "--print_all")
    assert proc.returncode == 0, proc.stderr
    assert "modnet-webcam-portrait-matting" in proc.stdout.split()
