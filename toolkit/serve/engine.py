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
import time
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
        self._seconds_per_job = 0.5  # refined as requests complete; feeds Retry-After
        # Pixels of images being decoded, matted or encoded at once: an image under the pixel
        # limit can still take gigabytes (a 70 MP 16-bit RGBA PNG of 0.5 MB: about 3 GB), so
        # images together may hold at most one limit's worth (one such image, or many small).
        self.pixel_budget = settings.max_pixels
        self.pixels_in_use = 0
        self._budget_cond: asyncio.Condition | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, *self.input_size)

    # --- admission ------------------------------------------------------------------------

    @contextlib.contextmanager
    def admit(self) -> Iterator[Job]:
        """One of the ``max_queue`` places, as a :class:`Job`; QueueFull at once if none is free.

        The place (and the pixels the job reserved) is given back when the job's threads have
        finished, not when the handler returns: a request answered 503 at its deadline while
        its image is still being decoded keeps counting until the decoding ends, so the queue
        bounds the work really in progress. Called on the event loop only (no lock needed)."""
        if self.admitted >= self.settings.max_queue:
            raise QueueFull(self.retry_after())
        self.admitted += 1
        job = Job(self)
        try:
            yield job
        finally:
            job.finish()

    def retry_after(self) -> int:
        """Seconds until the queue has drained by a pool's worth, from the time whole requests
        have been taking: at least 1 (HTTP counts whole seconds), at most the request timeout."""
        backlog = self.admitted * self._seconds_per_job / max(1, self.requests)
        return int(
            min(max(1, math.ceil(backlog)), max(1, math.ceil(self.settings.request_timeout)))
        )

    def _job_done(self, job: Job, seconds: float) -> None:
        self.admitted -= 1
        self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * seconds
        if job.pixels:
            self.pixels_in_use -= job.pixels
            task = asyncio.ensure_future(self._budget_changed())
            self._tasks.add(task)  # keep a reference until it ran
            task.add_done_callback(self._tasks.discard)

    def _budget(self) -> asyncio.Condition:
        if self._budget_cond is None:
            self._budget_cond = asyncio.Condition()
        return self._budget_cond

    async def _budget_changed(self) -> None:
        cond = self._budget()
        async with cond:
            cond.notify_all()

    # --- work -----------------------------------------------------------------------------

    async def infer(self, tensor: F32Array) -> F32Array:
        """The IR's output for one 1 x 3 x H x W tensor, through the asynchronous pool."""
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.requests)
        slots = self._slots
        await slots.acquire()
        future: asyncio.Future[F32Array] = loop.create_future()
        try:
            # Never blocks: the semaphore guarantees an idle request.
            self._pool.start_async({0: tensor}, (loop, future, slots))
        except BaseException:
            slots.release()
            raise
        return await future

    def _on_done(self, request: ov.InferRequest, userdata: Any) -> None:
        """OpenVINO's thread: copy the output and hand it to the loop."""
        loop, future, slots = userdata
        result: F32Array | BaseException
        try:
            result = np.array(request.get_output_tensor(0).data, dtype=np.float32)
        except BaseException as exc:  # handed to the waiting request, never lost in C++
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody waits
            loop.call_soon_threadsafe(self._settle, future, slots, result)

    @staticmethod
    def _settle(
        future: asyncio.Future[F32Array],
        slots: asyncio.Semaphore,
        result: F32Array | BaseException,
    ) -> None:
        slots.release()
        if future.done():  # the client went away or timed out
            return
        if isinstance(result, BaseException):
            future.set_exception(RuntimeError(f"inference failed: {result}"))
        else:
            future.set_result(result)

    async def matte(self, bgr: npt.NDArray[np.uint8], job: Job) -> F32Array:
        """The float matte of one BGR frame at its size: ``MattingSession.matte``'s steps, with
        the inference on the pool and the resizing in the job's threads."""
        tensor = await job.cpu(self.session.preprocess, bgr)
        raw = await self.infer(tensor)
        return await job.cpu(self.session.postprocess, raw, bgr.shape[0], bgr.shape[1])

    def close(self) -> None:
        """Wait for the requests in flight, then stop the CPU threads."""
        self._pool.wait_all()
        self._cpu.shutdown(wait=True)


class Job:
    """One admitted request: its CPU work (tracked, so the place is kept until it ends) and
    the pixels it reserved."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pixels = 0
        self.started = time.monotonic()
        self._pending: set[asyncio.Future[Any]] = set()

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (decode, resize, encode) in the server's threads. If the request is
        cancelled (its deadline), the work still runs to its end and the job keeps its place
        until then."""
        future = asyncio.get_running_loop().run_in_executor(self.engine._cpu, fn, *args)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return await asyncio.shield(future)

    async def reserve(self, pixels: int) -> None:
        """Wait until ``pixels`` more fit in the engine's pixel budget (an image alone always
        fits: it is under the pixel limit), then hold them until the job ends."""
        engine = self.engine
        cond = engine._budget()
        async with cond:
            await cond.wait_for(
                lambda: (
                    engine.pixels_in_use == 0
                    or engine.pixels_in_use + pixels <= engine.pixel_budget
                )
            )
            engine.pixels_in_use += pixels
            self.pixels += pixels

    def finish(self) -> None:
        """Give the place and the pixels back once every thread of the job has finished."""
        pending = [f for f in self._pending if not f.done()]

        def release(_: object = None) -> None:
            self.engine._job_done(self, time.monotonic() - self.started)

        if not pending:
            release()
        else:
            asyncio.gather(*pending, return_exceptions=True).add_done_callback(release)
