"""One compiled IR shared by every request, through its asynchronous request pool.

HTTP handlers run on one asyncio loop; the CPU work around inference (decoding, resizing,
encoding) runs in a small thread pool, and the network itself in OpenVINO's
:class:`~openvino.AsyncInferQueue`, several requests in flight, so a loaded server keeps the
IR as busy as a local batch would. A request waits for a free slot of the pool without
blocking the loop (an asyncio semaphore sized like the pool; OpenVINO's completion callback
hands the result back with ``call_soon_threadsafe``).

In front of all that sits the admission count: at most ``max_queue`` requests are inside the
server at once (reading their body, waiting, running or encoding). One more is refused at
once with :class:`QueueFull`, which the app turns into 503 + ``Retry-After``, rather than
letting requests pile up until every client times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import openvino as ov

from toolkit.matting.session import MattingSession
from toolkit.serve.settings import ServeSettings

F32Array = npt.NDArray[np.float32]
T = TypeVar("T")


class QueueFull(Exception):
    """The server already holds ``max_queue`` requests; ``retry_after`` is a hint in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy ({retry_after} s until a retry is worth it)")
        self.retry_after = retry_after


class Engine:
    """The session, the request pool and the admission count of one served model."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        # Stretch to the IR's own size, as infer's default: one input size, one compiled model.
        self.session = MattingSession.from_xml(
            settings.xml,
            device=settings.device,
            precision=settings.inference_precision,
            resize="stretch",
            performance=settings.performance,
            network_size=settings.network_size,
        )
        model = self.session.model
        # Stretch: every frame goes to one size (the IR's, or --network-size), whatever its own.
        self.input_size: tuple[int, int] = self.session.network_size(512, 512)
        compiled = model.compiled(self.input_size)
        optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests = settings.requests or max(2, optimal)
        self._pool = ov.AsyncInferQueue(compiled, self.requests)
        self._pool.set_callback(self._on_done)
        self.output_shape = tuple(int(d) for d in compiled.output(0).get_shape())
        self.input_name = model.input_name
        self.output_name = compiled.output(0).get_any_name()
        self._cpu = ThreadPoolExecutor(max(1, settings.workers), thread_name_prefix="serve-cpu")
        self._slots: asyncio.Semaphore | None = None
        self.admitted = 0
        self._seconds_per_image = 0.1  # refined as requests complete; feeds Retry-After

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, *self.input_size)

    # --- admission ------------------------------------------------------------------------

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_queue`` places for the duration; raise QueueFull if none is free.

        Called on the event loop only (no lock needed)."""
        if self.admitted >= self.settings.max_queue:
            raise QueueFull(self.retry_after())
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    def retry_after(self) -> int:
        """Seconds until the queue has drained by a pool's worth: at least 1 (HTTP counts whole
        seconds)."""
        backlog = self.admitted * self._seconds_per_image / max(1, self.requests)
        return max(1, math.ceil(backlog))

    # --- work -----------------------------------------------------------------------------

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (decode, resize, encode) in the server's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    async def infer(self, tensor: F32Array) -> F32Array:
        """The IR's output for one 1 x 3 x H x W tensor, through the asynchronous pool."""
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.requests)
        slots = self._slots
        await slots.acquire()
        future: asyncio.Future[F32Array] = loop.create_future()
        started = loop.time()
        try:
            # Never blocks: the semaphore guarantees an idle request.
            self._pool.start_async({0: tensor}, (loop, future, slots, started))
        except BaseException:
            slots.release()
            raise
        return await future

    def _on_done(self, request: ov.InferRequest, userdata: Any) -> None:
        """OpenVINO's thread: copy the output and hand it to the loop."""
        loop, future, slots, started = userdata
        result: F32Array | BaseException
        try:
            result = np.array(request.get_output_tensor(0).data, dtype=np.float32)
        except BaseException as exc:  # handed to the waiting request, never lost in C++
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody waits
            loop.call_soon_threadsafe(self._settle, future, slots, result, started)

    def _settle(
        self,
        future: asyncio.Future[F32Array],
        slots: asyncio.Semaphore,
        result: F32Array | BaseException,
        started: float,
    ) -> None:
        slots.release()
        elapsed = asyncio.get_running_loop().time() - started
        self._seconds_per_image = 0.9 * self._seconds_per_image + 0.1 * elapsed
        if future.done():  # the client went away or timed out
            return
        if isinstance(result, BaseException):
            future.set_exception(RuntimeError(f"inference failed: {result}"))
        else:
            future.set_result(result)

    async def matte(self, bgr: npt.NDArray[np.uint8]) -> F32Array:
        """The float matte of one BGR frame at its size: ``MattingSession.matte``'s steps, with
        the inference on the pool."""
        tensor = await self.run_cpu(self.session.preprocess, bgr)
        raw = await self.infer(tensor)
        return await self.run_cpu(self.session.postprocess, raw, bgr.shape[0], bgr.shape[1])

    def close(self) -> None:
        """Wait for the requests in flight, then stop the CPU threads."""
        self._pool.wait_all()
        self._cpu.shutdown(wait=True)
