"""Fixtures shared by every test module: real checkpoints, the sample photo, the CLI.

Area-specific fixtures live beside their tests (``tests/<stage>/fixtures.py``), listed in
``pytest_plugins`` so that work on one area never edits another's fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.paths import sample_image

pytest_plugins: list[str] = [
    "tests.evaluate.fixtures",
    "tests.download.fixtures_http",
    "tests.convert.fixtures",
    "tests.matting.fixtures",
    "tests.hardening.fixtures",
    "tests.perf.fixtures",
    "tests.serve.fixtures",
    "tests.cluster.fixtures",
]

REPO = Path(__file__).resolve().parent.parent

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def sample_photo() -> Path:
    """A real photograph (NASA's astronaut portrait, 512x512 RGB PNG)."""
    return sample_image()


@pytest.fixture(scope="session")
def tame_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights, released legacy format, calm numerics (for reduced-precision checks)."""
    from toolkit.model.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tame.ckpt", seed=1, profile="tame", fmt="legacy"
    )


@pytest.fixture(scope="session")
def touchy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights, released legacy format, sensitive numerics (for exactness checks)."""
    from toolkit.model.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "touchy.ckpt", seed=2, profile="touchy", fmt="legacy"
    )


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``modnet-tools`` in a subprocess (real exit codes, real stderr), cwd = tmp_path."""

    def run(
        *args: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
        full_env.pop(
            "MODNET_TOOLS_HOME", None
        ) if env is None or "MODNET_TOOLS_HOME" not in env else None
        return subprocess.run(
            [sys.executable, "-m", "toolkit", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=timeout,
        )

    return run
