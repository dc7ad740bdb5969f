"""Reading a request body the careful way: a size limit, a deadline.

Uploads are read here rather than by FastAPI's form handling so that a body over the limit is
refused as soon as its ``Content-Length`` (or its running size, when chunked) says so, before
it is buffered or spooled to disk; so that a client trickling bytes is cut off at the deadline
(408) instead of holding a connection and a queue place for ever; and so that a multipart
form is parsed only after it is whole and within the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from toolkit.serve.errors import ApiError, one_line


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


async def read_body(request: Request, limit: int, deadline: float) -> bytes:
    """The whole body, or ApiError 413 (too large), 408 (not sent before ``deadline``, a loop
    time), 400 (bad Content-Length, client gone)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length {one_line(declared, 40)!r}")
        if int(declared) > limit:
            raise ApiError(
                413, f"the body is {_mib(int(declared))}, over the limit of {_mib(limit)}"
            )
    if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        raise ApiError(415, "compressed request bodies are not accepted (send identity)")
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(anext(stream), remaining)
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over the limit of {_mib(limit)}")
            chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "the request body was not received in time") from None
    except ClientDisconnect:
        raise ApiError(
            400, "the client closed the connection before the body was complete"
        ) from None
    finally:
        await stream.aclose()
    return b"".join(chunks)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data
    yield b""


async def image_from_body(request: Request, body: bytes) -> tuple[bytes, str]:
    """The uploaded image and a label for messages: the multipart field ``file``, or the raw
    body when it is sent as ``image/*`` or ``application/octet-stream``. Else 400/415."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        parser = MultiPartParser(request.headers, _once(body), max_files=1, max_fields=8)
        parser.spool_max_size = len(body) + 1  # the body is in memory already: keep it there
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, f"malformed multipart body: {exc.message}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    400, "a multipart upload needs the image in a file field named 'file'"
                )
            data = await upload.read()
            name = one_line(upload.filename or "upload", 80)
        finally:
            await form.close()
        return data, f"upload {name!r}"
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body, "upload"
    shown = one_line(ctype, 60) or "none"
    raise ApiError(
        415,
        f"unsupported Content-Type {shown!r}: send the image as multipart/form-data (field "
        "'file'), image/*, or application/octet-stream",
    )
