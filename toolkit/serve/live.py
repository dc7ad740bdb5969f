"""``/v1/live``: the web page's live mode, camera frames in and matted frames out, on a WebSocket.

The protocol, kept small enough to implement in a page without a library:

* text messages are JSON settings: ``{"token": ..., "output": "composite", "background":
  "#00ff00", "format": "jpeg"}`` (any subset; the same values as ``/v1/matte``). With a token
  configured the first message must carry it, or the socket is closed (1008).
* binary messages are encoded frames (JPEG, PNG, WebP); each is answered by one binary message,
  the rendered frame, or by a text message ``{"error": ...}`` (the socket stays open; a busy
  server says ``{"error": ..., "retry_after": s}`` and the frame is dropped).
* a socket idle for ``ws_idle_timeout`` seconds is closed (1000); frames over the upload limit
  close it (1009), since the frame was already received whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from toolkit.errors import ToolkitError
from toolkit.serve.auth import token_matches
from toolkit.serve.engine import Engine, QueueFull
from toolkit.serve.errors import ApiError, load_json, one_line
from toolkit.serve.render import RenderOptions, parse_options
from toolkit.serve.timing import deadline_in, wait_until
from toolkit.serve.v1 import matte_upload

POLICY_VIOLATION = 1008
TOO_BIG = 1009


class _Closed(Exception):
    """The socket is to be (or was) closed: stop serving it."""


def router(engine: Engine) -> APIRouter:
    settings = engine.settings
    api = APIRouter(prefix="/v1")

    async def receive(ws: WebSocket) -> Mapping[str, Any]:
        try:
            message = await asyncio.wait_for(ws.receive(), settings.ws_idle_timeout)
        except TimeoutError:
            await ws.close(1000, "idle")
            raise _Closed from None
        if message["type"] == "websocket.disconnect":
            raise _Closed
        return message

    def apply(text: str, options: RenderOptions) -> tuple[RenderOptions, str | None]:
        """New settings from a text message, and the token it carried."""
        data = load_json(text, "a text message")
        if not isinstance(data, dict):
            raise ApiError(400, "a text message must be a JSON object of settings")
        unknown = sorted(set(data) - {"token", "output", "background", "format"})
        if unknown:
            raise ApiError(400, f"unknown setting {one_line(unknown[0], 40)!r}")
        values = {k: data.get(k) for k in ("output", "background", "format")}
        if not all(v is None or isinstance(v, str) for v in values.values()):
            raise ApiError(400, "settings must be strings")
        if any(v is not None for v in values.values()):
            options = parse_options(
                values["output"] or options.output,
                values["format"] or options.fmt,
                values["background"],
                settings.png_compression,
            )
        token = data.get("token")
        return options, token if isinstance(token, str) else None

    async def frame(ws: WebSocket, data: bytes, options: RenderOptions) -> None:
        if len(data) > settings.max_upload_bytes:
            await ws.close(TOO_BIG, "frame over the upload limit")
            raise _Closed
        try:
            with engine.admit() as job:
                deadline = deadline_in(settings.request_timeout)
                payload = await wait_until(matte_upload(job, data, "frame", options), deadline)
        except QueueFull as exc:
            await ws.send_text(json.dumps({"error": str(exc), "retry_after": exc.retry_after}))
            return
        except (ApiError, ToolkitError) as exc:
            await ws.send_text(json.dumps({"error": one_line(getattr(exc, "message", str(exc)))}))
            return
        await ws.send_bytes(payload)

    @api.websocket("/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        options = parse_options("composite", "jpeg", None, settings.png_compression)
        authorised = settings.token is None
        try:
            while True:
                message = await receive(ws)
                text, data = message.get("text"), message.get("bytes")
                if text is not None:
                    try:
                        options, token = apply(text, options)
                    except ApiError as exc:
                        if not authorised:
                            await ws.close(POLICY_VIOLATION, "send the token first")
                            return
                        await ws.send_text(json.dumps({"error": exc.message}))
                        continue
                    if not authorised:
                        if settings.token is None or not token_matches(token, settings.token):
                            await ws.close(POLICY_VIOLATION, "a valid token is required")
                            return
                        authorised = True
                    await ws.send_text(
                        json.dumps({"ok": True, "output": options.output, "format": options.fmt})
                    )
                elif data is not None:
                    if not authorised:
                        await ws.close(POLICY_VIOLATION, "send the token first")
                        return
                    await frame(ws, data, options)
        except (_Closed, WebSocketDisconnect):
            return

    return api
