"""What runs on the cluster's workers: the image actor and the video task.

Images: an actor compiles the IR once and then mattes batch after batch handed to it by Ray
Data, with the local runner's :meth:`~toolkit.matting.batch.Runner.run_images` (decoding,
several asynchronous inference requests and encoding overlapped, as locally). Videos: one task
each, running the local runner's :func:`~toolkit.matting.batch.run_video` (frames in order,
the video's own writers). Both ask the :mod:`tracker <toolkit.cluster.tracker>` first
which inputs are already done (a retry after a worker died) and record each input the moment
its files are written.

Each worker's OpenVINO gets as many threads as the CPUs Ray reserved for it, so two one-CPU
workers on one machine do not each spread over every core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from toolkit.matting.batch import InferOptions, ItemResult, Plan, Runner, run_video
from toolkit.matting.images import InputItem
from toolkit.matting.prepost import ResizeMode
from toolkit.matting.runtime import InferencePrecision, core
from toolkit.matting.session import MattingSession


def limit_threads(device: str, threads: int) -> None:
    """Give this worker's OpenVINO (CPU) ``threads`` threads, the CPUs Ray reserved for it."""
    if device.startswith("CPU"):
        core().set_property("CPU", {"INFERENCE_NUM_THREADS": threads})


@dataclass(frozen=True)
class SessionSpec:
    """How each worker opens its session (the IR path must be the same on every node)."""

    xml: Path
    device: str = "CPU"
    precision: InferencePrecision = "f32"
    resize: ResizeMode = "stretch"
    requests: int = 0
    network_size: tuple[int, int] | None = None
    threads: int = 1

    def open(self) -> MattingSession:
        limit_threads(self.device, self.threads)
        return MattingSession.from_xml(
            self.xml,
            device=self.device,
            precision=self.precision,
            resize=self.resize,
            performance="throughput",
            # At least two requests even on one thread: the next frame is resized while the
            # current one runs.
            requests=self.requests or max(2, self.threads),
            network_size=self.network_size,
        )


def plan_row(plan: Plan, key: int) -> dict[str, Any]:
    """A plan as a Ray Data row (plain columns)."""
    item = plan.item
    return {
        "key": key,
        "kind": item.kind,
        "label": item.label,
        "path": str(item.path) if item.path is not None else "",
        "stem": plan.stem,
    }


def row_plan(kind: str, label: str, path: str, stem: str) -> Plan:
    item = InputItem(kind="image" if kind == "image" else "video", label=label, path=Path(path))
    return Plan(item, stem)


class ImageMatter:
    """Ray Data's callable class for images: one compiled IR per actor, reused for every batch."""

    def __init__(self, spec: SessionSpec, options: InferOptions, tracker: Any) -> None:
        self._runner = Runner(spec.open(), options)
        self._tracker = tracker

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        import ray

        keys = [int(k) for k in batch["key"]]
        attempts = ray.get(self._tracker.begin.remote(keys))
        todo = [i for i, key in enumerate(keys) if key in attempts]
        plans = {
            i: row_plan(
                "image", str(batch["label"][i]), str(batch["path"][i]), str(batch["stem"][i])
            )
            for i in todo
        }
        if any(attempts[keys[i]] > 1 for i in todo):
            # A retry: a worker died on this batch. One image at a time, each attempt counted,
            # so an image that kills its worker is found and given up alone.
            for i in todo:
                self._isolated(keys[i], plans[i])
        else:
            pending: list[Any] = []

            def record(index: int, result: ItemResult) -> None:
                pending.append(self._tracker.record.remote(keys[todo[index]], result))

            if plans:
                self._runner.run_images([plans[i] for i in todo], done=record)
            ray.get(pending)
        return {"key": np.asarray(keys, dtype=np.int64)}

    def _isolated(self, key: int, plan: Plan) -> None:
        import ray

        from toolkit.cluster.tracker import MAX_ATTEMPTS

        count = ray.get(self._tracker.begin.remote([key])).get(key)
        if count is None:  # done meanwhile
            return
        if count > MAX_ATTEMPTS:
            result = given_up(plan, count - 1)
        else:
            result = self._runner.run_images([plan])[0]
        ray.get(self._tracker.record.remote(key, result))


def given_up(plan: Plan, deaths: int) -> ItemResult:
    label = plan.item.label
    return ItemResult(
        label, error=f"{label}: its worker died {deaths} times while matting it; given up"
    )


def matte_video(row: dict[str, Any], spec: SessionSpec, options: InferOptions, tracker: Any) -> int:
    """One video, start to end, on one worker; returns its key once its result is recorded."""
    import ray

    from toolkit.cluster.tracker import MAX_ATTEMPTS, TrackerReporter

    key = int(row["key"])
    count = ray.get(tracker.begin.remote([key])).get(key)
    if count is None:  # done by an earlier attempt
        return key
    plan = row_plan("video", row["label"], row["path"], row["stem"])
    result: ItemResult
    if count > MAX_ATTEMPTS:
        result = given_up(plan, count - 1)
        ray.get(tracker.record.remote(key, result))
        return key
    try:
        session = spec.open()
    except Exception as exc:  # the IR cannot load on this node: this input fails, not the run
        result = ItemResult(plan.item.label, error=f"{plan.item.label}: {exc}")
    else:
        result = run_video(session, plan, options, TrackerReporter(tracker, key))
    ray.get(tracker.record.remote(key, result))
    return key
