"""The application factory: ``create_app(settings)`` -> a FastAPI app serving one model.

Everything the app uses hangs off the returned object (the engine on ``app.state``, routes
built around it), never off module globals, so several apps can live in one process and a Ray
Serve replica can build its own from the same settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from toolkit import __version__
from toolkit.serve import live, v1, v2
from toolkit.serve.auth import LoopbackGuard, bearer_guard
from toolkit.serve.engine import Engine
from toolkit.serve.errors import install_handlers
from toolkit.serve.settings import ServeSettings, is_loopback

STATIC = Path(__file__).parent / "static"

#: The page loads nothing from elsewhere; images are blobs, frames come over the WebSocket.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """Build the app for ``settings`` (the IR is read and compiled here, once).

    ``engine`` may be passed in by a caller that made it already (tests, a replica)."""
    engine = engine or Engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()  # after uvicorn has finished the requests in flight

    app = FastAPI(
        title="modnet-tools",
        version=__version__,
        summary="MODNet portrait matting: /v1/matte, the Open Inference Protocol at /v2, a page at /",
        docs_url=None,  # the Swagger page loads scripts from a CDN: the server fetches nothing
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    install_handlers(app)
    guard = bearer_guard(settings.token)
    app.include_router(v1.router(engine, guard))
    app.include_router(v2.router(engine, guard))
    app.include_router(live.router(engine))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/v1/info", include_in_schema=False)
    async def info() -> dict[str, object]:
        """What the page shows about the server (no secrets: whether a token is needed)."""
        return {
            "model": settings.name,
            "input": list(engine.input_shape),
            "precision": settings.inference_precision,
            "token_required": settings.token is not None,
            "max_upload_bytes": settings.max_upload_bytes,
        }

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(LoopbackGuard, loopback_only=is_loopback(settings.host))
    return app
