"""``serve``: the HTTP API (``/v1/matte``, the Open Inference Protocol at ``/v2``) and the web
page, on the converted IR found exactly as ``infer`` finds it.

Thin wrapper: options are validated here and handed to :func:`toolkit.serve.server.serve`.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from toolkit.cli.app import app
from toolkit.cli.infer_cmd import _resolve_model
from toolkit.cli.options import (
    DEFAULT_MAX_PIXELS,
    Device,
    DownloadDir,
    InferencePrecisionOption,
    MaxPixels,
    ModelName,
    ModelPrecision,
    ModelRoot,
    ModelXml,
    NetworkSize,
    finite,
)
from toolkit.errors import UsageError, require
from toolkit.perf.fastpath import FAST_HELP


@app.command("serve")
def serve(
    model: ModelXml = None,
    name: ModelName = "modnet-webcam-portrait-matting",
    precision: ModelPrecision = None,
    model_root: ModelRoot = None,
    download_dir: DownloadDir = None,
    device: Device = "CPU",
    inference_precision: InferencePrecisionOption = "f32",
    fast: Annotated[bool, typer.Option("--fast", help=FAST_HELP)] = False,
    network_size: NetworkSize = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on (loopback by default; anything else warns without a token).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one).")
    ] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Require 'Authorization: Bearer TOKEN' on the API (prefer $MODNET_TOOLS_TOKEN: "
            "a command line is visible to other users).",
            show_default=False,
        ),
    ] = None,
    performance: Annotated[
        str,
        typer.Option(
            "--performance",
            help="latency (default: compiled as infer compiles one image, identical mattes) or "
            "throughput (parallel streams: more images/s under load, mattes differ by rounding).",
        ),
    ] = "latency",
    requests: Annotated[
        int,
        typer.Option(
            "--requests",
            min=0,
            max=64,
            help="Inference requests in flight (0: OpenVINO's optimum, at least 2).",
        ),
    ] = 0,
    max_queue: Annotated[
        int,
        typer.Option(
            "--max-queue",
            min=1,
            max=10_000,
            help="Requests held at once; one more gets 503 + Retry-After.",
        ),
    ] = 32,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb",
            callback=finite,
            min=0.01,
            max=1024,
            help="Largest request body accepted (MiB).",
        ),
    ] = 32.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            callback=finite,
            min=0.1,
            max=3600,
            help="Seconds a request may take, from arrival to answer.",
        ),
    ] = 30.0,
    ws_idle_timeout: Annotated[
        float,
        typer.Option(
            "--ws-idle-timeout",
            callback=finite,
            min=0.1,
            max=3600,
            help="Seconds a live WebSocket may stay silent.",
        ),
    ] = 60.0,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request on stderr.")
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Serve from Ray Serve replicas behind Ray's proxy (at --host/--port, on the "
            "head node): auto, HOST:PORT, ray://HOST:PORT, or nothing for a local cluster.",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, max=1024, help="--ray: replicas of the app.")
    ] = 1,
    ray_cpus: Annotated[
        int,
        typer.Option(
            "--ray-cpus", min=1, max=1024, help="--ray: CPUs each replica reserves and uses."
        ),
    ] = 1,
) -> None:
    """Serve the model over HTTP: POST /v1/matte, the Open Inference Protocol (KServe v2) at
    /v2, and a web page with live webcam matting at /. Loopback only unless --host says
    otherwise; SIGTERM finishes the requests in flight, then exits."""
    require("fastapi", "serve")
    require("uvicorn", "serve")
    require("multipart", "serve")
    from toolkit.matting.prepost import parse_network_size
    from toolkit.matting.runtime import PerformanceMode, parse_precision
    from toolkit.serve.server import serve as run_server
    from toolkit.serve.settings import TOKEN_ENV, ServeSettings

    if performance not in ("latency", "throughput"):
        raise UsageError(f"--performance must be latency or throughput, not {performance!r}")
    hint = parse_precision(inference_precision)
    net_size = parse_network_size(network_size) if network_size is not None else None
    perf_mode: PerformanceMode = "throughput" if performance == "throughput" else "latency"
    root = model_root or download_dir
    if fast:  # chosen on this CPU, by measurement, within the budget: toolkit/perf/fastpath.py
        from toolkit.paths import default_root
        from toolkit.perf.fastpath import check_fast_options, choose_fast

        check_fast_options(precision, inference_precision)
        choice = choose_fast(
            root or default_root(),
            name,
            model=model,
            device=device,
            progress=lambda text: typer.echo(text, err=True),
        )
        typer.echo(choice.describe(), err=True)
        model, hint = choice.xml, choice.precision
        perf_mode = "throughput"
    xml = _resolve_model(model, name, precision, root)
    secret = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if secret is not None and (not secret.strip() or any(c.isspace() for c in secret)):
        raise UsageError("the token must be non-empty and hold no spaces")
    settings = ServeSettings(
        xml=xml,
        model_name=name if model is None else "",
        device=device,
        inference_precision=hint,
        performance=perf_mode,
        requests=requests,
        network_size=net_size,
        host=host,
        port=port,
        token=secret,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_queue=max_queue,
        request_timeout=request_timeout,
        ws_idle_timeout=ws_idle_timeout,
    )
    if ray is not None:
        from toolkit.cluster.connect import check_address
        from toolkit.cluster.serve import ServeCluster, serve_on_ray

        require("ray", "ray")
        serve_on_ray(settings, ServeCluster(check_address(ray), replicas, ray_cpus))
        return
    run_server(settings, access_log=access_log, log_level="info" if access_log else "warning")
