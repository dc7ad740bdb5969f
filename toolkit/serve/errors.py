"""Every failure the server reports is JSON ``{"error": "<one line>"}`` with the right status.

The same body shape as the Open Inference Protocol's errors, so one client-side check covers
both APIs. Handlers here replace FastAPI's defaults (HTML-less but nested ``detail`` objects)
and turn a library :class:`~toolkit.matting.images.InputError` into 413/415/422 by its kind.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from toolkit.errors import ToolkitError
from toolkit.matting.images import InputError, NotAnImageError, TooLargeError
from toolkit.serve.engine import QueueFull


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a one-line ``message``, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def one_line(text: str, limit: int = 300) -> str:
    """Messages go back to clients: one line, control characters removed, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def load_json(data: bytes | str, what: str) -> Any:
    """Parse client JSON, or ApiError 400. Python's parser raises more than JSONDecodeError on
    hostile input: RecursionError (deep nesting), ValueError (integers over 4300 digits)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise ApiError(400, f"{what} is not valid JSON: {one_line(str(exc), 120)}") from None


def from_input_error(exc: InputError) -> ApiError:
    """The status for an image the server cannot use."""
    if isinstance(exc, TooLargeError):
        return ApiError(413, one_line(str(exc)))
    if isinstance(exc, NotAnImageError):
        return ApiError(415, one_line(str(exc)))
    return ApiError(422, one_line(str(exc)))


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def busy_error(exc: QueueFull) -> ApiError:
    return ApiError(503, str(exc), {"Retry-After": str(exc.retry_after)})


def install_handlers(app: FastAPI) -> None:
    """JSON errors for ours, Starlette's (404, 405) and FastAPI's validation errors."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(400, "; ".join(parts) or "invalid request")

    async def toolkit_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, InputError):
            err = from_input_error(exc)
            return error_response(err.status, err.message)
        return error_response(400, str(exc))

    async def queue_full(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueFull)
        err = busy_error(exc)
        return error_response(err.status, err.message, err.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the same JSON shape, no traceback sent to the client
        # (uvicorn logs it on the server's stderr).
        return error_response(500, f"internal error ({type(exc).__name__})")

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ToolkitError, toolkit_error)
    app.add_exception_handler(QueueFull, queue_full)
