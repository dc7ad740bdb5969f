"""Running the app: uvicorn on a socket bound here, a graceful stop on SIGTERM.

The socket is bound before uvicorn starts so that ``--port 0`` works (the line printed says
which port the system chose, which is how the tests find their server). uvicorn's own signal
handling does the graceful stop: on SIGTERM or Ctrl-C it stops accepting, lets the requests in
flight finish (up to ``request_timeout`` more seconds), then the app's lifespan waits for the
IR's pool and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.serve.app import create_app
from toolkit.serve.settings import ServeSettings, is_loopback

#: uvicorn keeps an idle keep-alive connection this long.
KEEP_ALIVE_SECONDS = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ToolkitError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ToolkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a drained stop is a normal exit: uvicorn re-raises SIGTERM after
        draining, which kills the process with the signal's status before it can say so."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            wanted = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in wanted}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline on request headers.

    uvicorn times out idle keep-alive connections but not a client that connects and sends its
    headers slowly (or never): each such connection would be held for ever. Here every
    ``seconds`` a connection must have completed a request's headers or be inside a request
    (whose body has its own deadline in :mod:`toolkit.serve.body`); otherwise it is closed.
    """
    try:
        import httptools  # noqa: F401  (uvicorn's own choice when it is installed)
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]

    class HeaderDeadline(base):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            # ``cycle`` is the request being served; a new one means new headers arrived.
            self._deadline = self.loop.call_later(seconds, self._check, self.cycle)

        def _check(self, armed_at: object) -> None:
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # closed, or upgraded to a WebSocket (which has its own idle timeout)
            in_request = self.cycle is not None and not self.cycle.response_complete
            if in_request or self.cycle is not armed_at:
                self._arm()  # progress since: watch the next window
                return
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

    return HeaderDeadline


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: ServeSettings, *, log_level: str = "warning", access_log: bool = False) -> None:
    """Load the model, listen, serve until SIGTERM/SIGINT, drain, return."""
    import uvicorn

    sock = bind(settings.host, settings.port)  # a taken port fails before the model loads
    if settings.token is None and not is_loopback(settings.host):
        print(
            f"warning: listening on {settings.host}, beyond this machine, with no token: anyone "
            "who reaches it can use it (set MODNET_TOOLS_TOKEN or --token)",
            file=sys.stderr,
        )
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(settings.request_timeout) + 5,
        ws_max_size=settings.max_upload_bytes + 4096,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        server_header=False,
        date_header=True,
        lifespan="on",
        http=_header_deadline_protocol(settings.request_timeout),
        # Connections beyond this get 503 at once instead of exhausting file descriptors.
        limit_concurrency=settings.max_queue * 4 + 64,
    )
    server = _server_class()(config)
    engine = app.state.engine
    if engine.session.model.precision_note:
        print(f"note: {engine.session.model.precision_note}", file=sys.stderr)
    print(
        f"serving {settings.name} ({settings.xml}, {settings.inference_precision}, "
        f"{engine.requests} requests in flight) on {url_of(sock)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.force_exit:  # a second Ctrl-C: requests in flight were dropped, not finished
        raise KeyboardInterrupt
    print("stopped", file=sys.stderr, flush=True)
