"""``--ray``'s command line, without a cluster: the optional address, usage errors, what cannot
run on a cluster, and an address where nothing listens (fails fast, one line)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.helpers import assert_one_line_error
from tests.matting.fixtures import InferModel
from toolkit.cli import fill_optional_values


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["infer", "a.jpg", "--ray"], ["infer", "a.jpg", "--ray=local"]),
        (["infer", "--ray", "a.jpg"], ["infer", "--ray=local", "a.jpg"]),
        (["infer", "--ray", "-o", "x", "a"], ["infer", "--ray=local", "-o", "x", "a"]),
        (["infer", "--ray", "auto", "a"], ["infer", "--ray", "auto", "a"]),
        (["infer", "--ray", "head:6379", "a"], ["infer", "--ray", "head:6379", "a"]),
        (["infer", "--ray", "ray://10.0.0.1:10001"], ["infer", "--ray", "ray://10.0.0.1:10001"]),
        (["infer", "--ray=auto", "a"], ["infer", "--ray=auto", "a"]),
        (["infer", "--", "--ray"], ["infer", "--", "--ray"]),
    ],
)
def test_ray_without_an_address_means_a_local_cluster(argv: list[str], expected: list[str]) -> None:
    assert fill_optional_values(argv) == expected


def test_a_malformed_address_is_a_usage_error(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path
) -> None:
    proc = run_cli("infer", sample_photo, "-m", infer_model.xml, "--ray=not an address")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: --ray 'not an address'")


def test_a_camera_is_refused_on_a_cluster_without_connecting(
    run_cli: RunCli, infer_model: InferModel
) -> None:
    proc = run_cli("infer", "0", "-m", infer_model.xml, "--ray=127.0.0.1:1")
    assert_one_line_error(proc, "camera 0", "without --ray")


def test_an_address_where_nothing_listens_fails_fast(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_cli(
        "infer", sample_photo, "-m", infer_model.xml, "--ray", f"127.0.0.1:{port}", timeout=60
    )
    assert_one_line_error(proc, f"127.0.0.1:{port}", "cannot connect")


def test_serve_on_ray_needs_a_fixed_port(run_cli: RunCli, infer_model: InferModel) -> None:
    proc = run_cli("serve", "-m", infer_model.xml, "--port", "0", "--ray", "127.0.0.1:1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "error: --port 0 cannot be used with --ray: Ray's proxy needs a fixed port"
    )


def test_serve_on_ray_fails_fast_where_nothing_listens(
    run_cli: RunCli, infer_model: InferModel
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_cli("serve", "-m", infer_model.xml, "--ray", f"127.0.0.1:{port}", timeout=60)
    assert_one_line_error(proc, "cannot connect")
