"""``serve --ray``: the serving app in N Ray Serve replicas behind Ray's HTTP proxy.

Each replica builds the very app ``modnet-tools serve`` runs (:func:`toolkit.serve.app.create_app`
from the same :class:`~toolkit.serve.settings.ServeSettings`), at replica start, on its node:
its own compiled IR, its own bounded queue (503 when full), the same endpoints and bytes.
Ray's proxy (on the head node, at ``--host``/``--port``) spreads requests over the replicas
and routes around one that died while Ray Serve starts a replacement.

The command stays in the foreground like ``serve``: SIGTERM or Ctrl-C deletes the application
(Ray Serve lets the replicas finish their requests in flight), disconnects and exits 0. On a
cluster it joined, Ray Serve itself (controller, proxy) keeps running for other applications;
on a local cluster it started, everything stops with the command.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from toolkit.cluster.connect import LOCAL, ray_session
from toolkit.cluster.workers import limit_threads
from toolkit.errors import ToolkitError, UsageError
from toolkit.serve.settings import ServeSettings, is_loopback

#: The application's name in Ray Serve (``serve status``, the replicas' process titles).
APP_NAME = "modnet-tools"


@dataclass(frozen=True)
class ServeCluster:
    address: str = LOCAL
    replicas: int = 1
    cpus: int = 1


class MattingReplica:
    """One replica: ``toolkit.serve``'s app, built on the replica (Ray Serve calls
    ``__serve_build_asgi_app__`` after the constructor), with OpenVINO on the replica's CPUs."""

    def __init__(self, settings: ServeSettings, threads: int) -> None:
        limit_threads(settings.device, threads)
        self._settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        from toolkit.serve.app import create_app

        return create_app(self._settings)


def serve_on_ray(settings: ServeSettings, cluster: ServeCluster) -> None:
    """Deploy, print where, wait for SIGTERM/SIGINT, delete the application."""
    if settings.port == 0:
        raise UsageError("--port 0 cannot be used with --ray: Ray's proxy needs a fixed port")
    if settings.token is None and not is_loopback(settings.host):
        print(
            f"warning: Ray's proxy listens on {settings.host}, beyond this machine, with no "
            "token: anyone who reaches it can use it (set MODNET_TOOLS_TOKEN or --token)",
            file=sys.stderr,
        )
    with ray_session(cluster.address):
        from ray import serve

        try:
            serve.start(
                http_options={"host": settings.host, "port": settings.port},
                proxy_location="HeadOnly",
            )
            deployment: Any = serve.deployment(
                serve.ingress()(MattingReplica),
                name="MattingReplica",
                num_replicas=cluster.replicas,
                ray_actor_options={"num_cpus": cluster.cpus},
                max_ongoing_requests=settings.max_queue + 1,  # the app answers 503 itself
            )
            serve.run(deployment.bind(settings, cluster.cpus), name=APP_NAME, route_prefix="/")
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise ToolkitError(
                f"Ray Serve could not deploy the app: {text[0] if text else type(exc).__name__}"
            ) from None
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(
            f"serving {settings.name} ({settings.xml}, {settings.inference_precision}) in "
            f"{cluster.replicas} Ray Serve replica(s) on http://{host}:{settings.port}",
            file=sys.stderr,
            flush=True,
        )
        try:
            _wait_for_stop()
        finally:
            serve.delete(APP_NAME)
    print("stopped", file=sys.stderr, flush=True)


def _wait_for_stop() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
