"""The optional bearer token, and the checks that keep a loopback server for this machine.

With a token set, every API request needs ``Authorization: Bearer <token>`` (compared in
constant time); the page and the health probes do not (they reveal nothing). The live
WebSocket cannot carry headers from a browser, so its first message carries the token.

A server bound to loopback also refuses requests whose ``Host`` is not a loopback name: a web
page elsewhere cannot reach it through DNS rebinding (a name of theirs that resolves to
127.0.0.1), and a WebSocket whose ``Origin`` is another site is refused (browsers do not apply
the same-origin policy to WebSockets).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolkit.serve.errors import ApiError, error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def bearer_guard(token: str | None) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: 401 unless the request carries ``token`` (no-op without one)."""

    async def check(request: Request) -> None:
        if token is None:
            return
        if not token_matches(bearer(request.headers.get("authorization")), token):
            raise ApiError(
                401,
                "this server needs 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )

    return check


def host_name(value: str) -> str:
    """``Host`` header -> the bare host name (no port)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def same_origin(origin: str, host: str) -> bool:
    """Whether a WebSocket's ``Origin`` is the page this server served (same host and port)."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _nosniff(send: Send) -> Send:
    """``send`` adding ``X-Content-Type-Options: nosniff`` to every response: browsers take
    an answer for what its Content-Type says, never for what its bytes look like."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                headers.append((b"x-content-type-options", b"nosniff"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


class LoopbackGuard:
    """ASGI middleware: on a loopback server, refuse other ``Host`` names (DNS rebinding) and
    cross-site WebSocket ``Origin`` headers, before any route runs; mark every answer
    ``nosniff``."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        problem = None
        hosts = sum(1 for k, _ in scope["headers"] if k.lower() == b"host")
        if hosts > 1:
            problem = "more than one Host header"
        elif self.loopback_only and host and host_name(host) not in LOOPBACK_NAMES:
            problem = f"Host {host_name(host)[:80]!r} is not this loopback server's name"
        origin = headers.get("origin")
        if (
            problem is None
            and scope["type"] == "websocket"
            and origin
            and not same_origin(origin, host)
        ):
            problem = "cross-site WebSocket refused (Origin is not this server)"
        if problem is None:
            await self.app(scope, receive, _nosniff(send) if scope["type"] == "http" else send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})
            return
        response = error_response(403, problem)
        await response(scope, receive, send)
