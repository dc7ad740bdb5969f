"""Joining a Ray cluster (or starting a local one) for one command, quietly.

``--ray`` takes ``auto`` (the cluster this machine belongs to, as ``ray start`` recorded it),
``HOST:PORT`` or ``ray://HOST:PORT`` (a head node's address), or nothing (a local cluster on
this machine for the duration of the command). Ray's own chatter (connection banners, Ray
Data's progress bars and execution logs, worker log forwarding) is turned off, so a cluster
run prints what a local run prints. Usage statistics stay off unless the user enabled them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from typing import Any

from toolkit.errors import ToolkitError, UsageError, require

#: What ``--ray`` alone means.
LOCAL = "local"
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}$|^(ray://)?\[[0-9A-Fa-f:.]+\]:\d{1,5}$")


def is_address(value: str) -> bool:
    """True for what ``--ray`` accepts as an address: ``auto``, ``local``, ``[ray://]HOST:PORT``."""
    return value in ("auto", LOCAL) or bool(_ADDRESS.match(value))


def check_address(value: str) -> str:
    if not is_address(value):
        raise UsageError(
            f"--ray {value!r}: expected auto, HOST:PORT or ray://HOST:PORT (or --ray alone for a "
            "local cluster)"
        )
    return value


def quiet_ray_environment() -> None:
    """Environment Ray reads at import: no usage statistics unless asked for."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@contextlib.contextmanager
def ray_session(address: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to ``address`` (or start a local cluster) for the block, and disconnect after.

    Yields the ``ray`` module. A local cluster started here stops with the block.
    """
    check_address(address)
    require("ray", "ray")
    quiet_ray_environment()
    import ray

    kwargs: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "include_dashboard": False,
    }
    if address == LOCAL:
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    else:
        _probe(address)
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolkitError(f"--ray {address}: cannot connect to the cluster: {first}") from None
    try:
        _quiet_ray_data()
        _divert_cluster_notices()
        yield ray
    finally:
        ray.shutdown()


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at ``HOST:PORT`` (Ray itself retries for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ToolkitError(f"--ray {address}: cannot connect to the cluster: {reason}") from None


def _divert_cluster_notices() -> None:
    """Send the notices Ray prints on the driver's stdout ("(raylet) A worker died or was
    killed...", task retries) to stderr, one line each.

    stdout is the command's result, one line an input (scripts parse it); a retried worker
    is news about the cluster, which belongs with the progress on stderr. Ray prints them
    from a background thread through ``ray._private.worker.print_to_stdstream``, so that
    one function is wrapped; if a Ray release renames it, the notices stay on stdout.
    """
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "__toolkit_diverted__", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet" and not data.get("is_err"):
            for line in data.get("lines", []):
                first = str(line).strip().splitlines()[0] if str(line).strip() else ""
                if first:
                    print(f"ray: {first}", file=sys.stderr)
            return
        original(data, ignore_prefix)

    to_stderr.__toolkit_diverted__ = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    for name in ("ray", "ray.data", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False
