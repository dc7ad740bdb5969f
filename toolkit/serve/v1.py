"""``POST /v1/matte``: an image in, the matte (or cut-out, or composite) out.

The image is the multipart field ``file`` or the raw body (``image/*`` or
``application/octet-stream``). Query parameters: ``output=alpha|rgba|composite`` (default
``alpha``), ``background=`` (for ``composite``: ``#RRGGBB``, ``R,G,B``, ``bgr:B,G,R``, a name
such as ``omz``, or ``blur:K``; never a file), ``format=png|jpeg`` (default ``png``). The answer
holds the bytes ``infer`` writes for the same image and options.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Query, Request, Response

from toolkit.matting.images import decode_image, decoded_size
from toolkit.serve.body import image_from_body, read_body
from toolkit.serve.engine import Engine, Job
from toolkit.serve.errors import ApiError, one_line
from toolkit.serve.render import RenderOptions, parse_options, render
from toolkit.serve.timing import deadline_in, wait_until

QUERY_PARAMETERS = frozenset({"output", "background", "format"})


async def matte_upload(job: Job, data: bytes, label: str, options: RenderOptions) -> bytes:
    """An encoded image in, the encoded answer out: its size checked from the header, its
    pixels reserved in the engine's budget, then decoded, matted and rendered as ``infer``
    does. Every step counts against the caller's deadline."""
    limit = job.engine.settings.max_pixels
    width, height = await job.cpu(functools.partial(decoded_size, max_pixels=limit), data, label)
    await job.reserve(width * height)
    frame = await job.cpu(functools.partial(decode_image, max_pixels=limit), data, label)
    alpha = await job.engine.matte(frame, job)
    return await job.cpu(render, frame, alpha, options)


def router(engine: Engine, guard: Callable[[Request], Awaitable[None]]) -> APIRouter:
    settings = engine.settings
    api = APIRouter(prefix="/v1")

    @api.post(
        "/matte",
        dependencies=[Depends(guard)],
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def matte(
        request: Request,
        output: str | None = Query(None, description="alpha (default), rgba or composite"),
        background: str | None = Query(
            None, description="composite's background: a colour or blur:K"
        ),
        fmt: str | None = Query(None, alias="format", description="png (default) or jpeg"),
    ) -> Response:
        unknown = sorted(set(request.query_params) - QUERY_PARAMETERS)
        if unknown:
            raise ApiError(400, f"unknown query parameter {one_line(unknown[0], 40)!r}")
        repeated = sorted(
            k for k in set(request.query_params) if len(request.query_params.getlist(k)) > 1
        )
        if repeated:
            raise ApiError(
                400, f"query parameter {one_line(repeated[0], 40)!r} given more than once"
            )
        options = parse_options(output, fmt, background, settings.png_compression)
        deadline = deadline_in(settings.request_timeout)
        with engine.admit() as job:
            body = await read_body(request, settings.max_upload_bytes, deadline)
            data, label = await image_from_body(request, body)
            payload = await wait_until(matte_upload(job, data, label, options), deadline)
        return Response(payload, media_type=options.media_type)

    return api
