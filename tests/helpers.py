"""Assertions shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, a single non-empty stderr line, no traceback, containing every needle."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines, "expected an error message on stderr"
    assert lines[-1].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), (needle, proc.stderr)


class CreatesFile:
    """Unpickling this would create a file: the canary of code execution."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.target}",))
