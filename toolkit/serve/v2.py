"""The Open Inference Protocol (KServe v2) over HTTP, for the IR itself.

Clients written for Triton or OpenVINO Model Server work unchanged (``tritonclient[http]`` is
the test client): health, server and model metadata, and ``infer`` with JSON tensors or the
binary tensor extension (``Inference-Header-Content-Length``: a JSON header, then each binary
tensor's raw little-endian bytes in order). The model takes what the IR takes: ``input``, FP32,
1 x 3 x H x W, BGR 0..255, and answers ``output``, the 1 x 1 x H x W matte.

Every malformed request (bad JSON, wrong name, shape, datatype, sizes that do not add up,
non-finite values) is a 400 with ``{"error": ...}``, the protocol's error shape; an unknown
model or version is a 404.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from toolkit import __version__
from toolkit.serve.body import read_body
from toolkit.serve.engine import Engine
from toolkit.serve.errors import ApiError, load_json, one_line
from toolkit.serve.timing import wait_until

#: The model's only version: the IR as served.
VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class ParsedRequest:
    """An infer request reduced to what this model needs."""

    request_id: str | None
    tensor: npt.NDArray[np.float32]
    binary_output: bool


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary part that follows it (empty for a JSON-only request)."""
    if header_length is None:
        head, rest = body, b""
    else:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12):
            raise _bad(f"{HEADER_LENGTH} must be a byte count, not {one_line(header_length, 40)!r}")
        size = int(text)
        if size > len(body):
            raise _bad(f"{HEADER_LENGTH} is {size} but the body has only {len(body)} bytes")
        head, rest = body[:size], body[size:]
    parsed = load_json(head, "the request header")
    if not isinstance(parsed, dict):
        raise _bad("the request must be a JSON object")
    return parsed, rest


def _expect_shape(value: Any, want: tuple[int, ...], name: str) -> None:
    if (
        not isinstance(value, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in value)
        or tuple(value) != want
    ):
        raise _bad(f"input {name!r} must have shape {list(want)}, not {one_line(str(value), 60)}")


def parse_infer(
    body: bytes,
    header_length: str | None,
    input_name: str,
    shape: tuple[int, ...],
    output_name: str,
) -> ParsedRequest:
    """Validate an infer request; return the input tensor and how to answer."""
    request, binary = _split_body(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"'inputs' must be a list with exactly one tensor, {input_name!r}")
    spec = inputs[0]
    if spec.get("name") != input_name:
        raise _bad(
            f"unknown input {one_line(str(spec.get('name')), 60)!r}: this model takes {input_name!r}"
        )
    if spec.get("datatype") != "FP32":
        raise _bad(
            f"input {input_name!r} must be FP32, not {one_line(str(spec.get('datatype')), 20)}"
        )
    _expect_shape(spec.get("shape"), shape, input_name)
    count = int(np.prod(shape))
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * 4:
            raise _bad(
                f"binary_data_size must be {count * 4} for FP32 {list(shape)}, not {one_line(str(size), 30)}"
            )
        if len(binary) != size:
            raise _bad(f"the binary part has {len(binary)} bytes, the header declares {size}")
        tensor = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(shape)
    else:
        if binary:
            raise _bad("binary data follows the header but no input declares binary_data_size")
        data = spec.get("data")
        if not isinstance(data, list):
            raise _bad(f"input {input_name!r} needs 'data' (or binary_data_size)")
        try:
            array = np.asarray(data)
        except (TypeError, ValueError):  # ragged nesting
            raise _bad(f"input {input_name!r}: 'data' must be a list of numbers") from None
        if array.dtype.kind not in "iuf":  # strings, booleans, objects, nulls
            raise _bad(f"input {input_name!r}: 'data' must hold numbers only")
        array = array.astype(np.float32)
        if array.size != count:
            raise _bad(
                f"input {input_name!r}: 'data' has {array.size} values, the shape needs {count}"
            )
        tensor = np.ascontiguousarray(array.reshape(shape))
    if not np.isfinite(tensor).all():
        raise _bad(f"input {input_name!r} holds NaN or infinite values")
    binary_output = _binary_output(request, output_name)
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("'id' must be a string")
    return ParsedRequest(rid, tensor, binary_output)


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean parameter: JSON true or false only (``"false"`` is not false)."""
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise _bad(
            f"parameter {key!r} must be true or false, not {one_line(json.dumps(value), 30)}"
        )
    return value


def _binary_output(request: dict[str, Any], output_name: str) -> bool:
    """Whether the client asked for the output as binary (per output, or for all)."""
    req_params = request.get("parameters") or {}
    if not isinstance(req_params, dict):
        raise _bad("'parameters' must be an object")
    binary = _flag(req_params, "binary_data_output", False)
    outputs = request.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _bad("'outputs' must be a list of objects")
    for out in outputs:
        if out.get("name") != output_name:
            raise _bad(
                f"unknown output {one_line(str(out.get('name')), 60)!r}: this model gives {output_name!r}"
            )
        params = out.get("parameters") or {}
        if not isinstance(params, dict):
            raise _bad("'parameters' must be an object")
        if "classification" in params:
            raise _bad("the classification extension is not supported")
        binary = _flag(params, "binary_data", binary)
    return binary


def infer_response(
    model: str, parsed: ParsedRequest, output_name: str, result: npt.NDArray[np.float32]
) -> Response:
    """The protocol's answer: JSON with the data inline, or the binary extension."""
    out: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(result.shape)}
    head: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": [out]}
    if parsed.request_id is not None:
        head["id"] = parsed.request_id
    if not parsed.binary_output:
        out["data"] = result.ravel().tolist()
        return JSONResponse(head)
    raw = result.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(head).encode()
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def router(engine: Engine, guard: Callable[[Request], Awaitable[None]]) -> APIRouter:
    """The v2 routes for ``engine``'s model. Health answers without the token (probes have
    none); metadata and inference need it."""
    settings = engine.settings
    name = settings.name
    api = APIRouter(prefix="/v2")
    protected = [Depends(guard)]

    def check_model(model: str, version: str | None = None) -> None:
        if model != name:
            raise ApiError(404, f"unknown model {one_line(model, 80)!r}: this server has {name!r}")
        if version is not None and version != VERSION:
            raise ApiError(404, f"model {name!r} has no version {one_line(version, 20)!r}")

    @api.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @api.get("", dependencies=protected)
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "modnet-tools",
            "version": __version__,
            "extensions": ["binary_tensor_data"],
        }

    def metadata() -> dict[str, Any]:
        return {
            "name": name,
            "versions": [VERSION],
            "platform": "openvino_ir",
            "inputs": [
                {"name": engine.input_name, "datatype": "FP32", "shape": list(engine.input_shape)}
            ],
            "outputs": [
                {"name": engine.output_name, "datatype": "FP32", "shape": list(engine.output_shape)}
            ],
        }

    @api.get("/models/{model}", dependencies=protected)
    async def model_metadata(model: str) -> dict[str, Any]:
        check_model(model)
        return metadata()

    @api.get("/models/{model}/versions/{version}", dependencies=protected)
    async def model_version_metadata(model: str, version: str) -> dict[str, Any]:
        check_model(model, version)
        return metadata()

    @api.get("/models/{model}/ready", dependencies=protected)
    async def model_ready(model: str) -> dict[str, Any]:
        check_model(model)
        return {"name": name, "ready": True}

    @api.get("/models/{model}/versions/{version}/ready", dependencies=protected)
    async def model_version_ready(model: str, version: str) -> dict[str, Any]:
        check_model(model, version)
        return {"name": name, "ready": True}

    async def infer(request: Request, model: str, version: str | None) -> Response:
        check_model(model, version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout
        with engine.admit() as job:
            body = await read_body(request, settings.max_upload_bytes, deadline)
            header_length = request.headers.get(HEADER_LENGTH)

            async def answer() -> Response:
                parsed = await job.cpu(
                    parse_infer,
                    body,
                    header_length,
                    engine.input_name,
                    engine.input_shape,
                    engine.output_name,
                )
                result = await engine.infer(parsed.tensor)
                return await job.cpu(infer_response, name, parsed, engine.output_name, result)

            return await wait_until(answer(), deadline)

    @api.post("/models/{model}/infer", dependencies=protected)
    async def model_infer(request: Request, model: str) -> Response:
        return await infer(request, model, None)

    @api.post("/models/{model}/versions/{version}/infer", dependencies=protected)
    async def model_version_infer(request: Request, model: str, version: str) -> Response:
        return await infer(request, model, version)

    return api
