"""The driver of ``infer --ray``: the local runner's plan, the cluster's hands, the local report.

Planning is the local runner's own (:func:`~toolkit.matting.batch.triage`: the same output
names, the same refusals, the same ``--skip-existing`` check), so a cluster run and a local run
write the same files under the same names. Images go through Ray Data in batches to a pool of
:class:`~toolkit.cluster.workers.ImageMatter` actors; each video is one
:func:`~toolkit.cluster.workers.matte_video` task. Results and frame counts come back through
the :mod:`tracker <toolkit.cluster.tracker>`, which feeds the caller's reporter as they arrive:
the same progress bar, per-input lines and summary as a local run.

Faults: Ray restarts a dead image actor and re-runs its batches, and re-runs a dead video task,
on any node with room, for as long as it takes a lost node to be declared dead; the tracker
keeps inputs already done from being done again, and gives up an input whose attempts killed
their worker :data:`~toolkit.cluster.tracker.MAX_ATTEMPTS` times (as a failure of that input
alone). What the cluster could not finish at all (a failed actor start) is reported per
input, as a failure of that input, never silently dropped.

Paths: inputs, outputs and the IR must be on a filesystem every node sees at the same path;
they are handed to workers as absolute paths, and the printed output paths are the local
run's (relative to ``-o`` as given).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toolkit.cluster.connect import LOCAL, ray_session
from toolkit.cluster.tracker import PROGRESS_INTERVAL, start_tracker
from toolkit.cluster.workers import ImageMatter, SessionSpec, matte_video, plan_row
from toolkit.matting.batch import (
    InferOptions,
    InferSummary,
    InputItem,
    ItemResult,
    Plan,
    Reporter,
    SilentReporter,
    total_frames,
    triage,
)
from toolkit.matting.resume import sweep_partials


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide: ``workers`` image actors (default: as many as the cluster's CPUs
    allow) of ``cpus`` CPUs each; ``batch_size`` images a Ray Data batch."""

    address: str = LOCAL
    workers: int | None = None
    cpus: int = 1
    batch_size: int = 8


def run_on_ray(
    items: list[InputItem],
    options: InferOptions,
    spec: SessionSpec,
    cluster: ClusterOptions,
    reporter: Reporter | None = None,
) -> InferSummary:
    """Matte every input on a Ray cluster; like :func:`~toolkit.matting.batch.run_infer`, never
    raises for a bad input (see the summary)."""
    return _Driver(options, spec, cluster, reporter or SilentReporter()).run(items)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Driver:
    def __init__(
        self,
        options: InferOptions,
        spec: SessionSpec,
        cluster: ClusterOptions,
        reporter: Reporter,
    ) -> None:
        self.options = options
        self.spec = replace(spec, xml=spec.xml.resolve(), threads=cluster.cpus)
        self.cluster = cluster
        self.reporter = reporter
        # Workers run elsewhere, in another working directory: absolute paths only.
        self.remote_options = replace(options, output_dir=options.output_dir.resolve())

    def run(self, items: list[InputItem]) -> InferSummary:
        started = time.perf_counter()
        results, runnable = triage(items, self.options, self.reporter)
        images = [p for p in runnable if p.item.kind == "image"]
        videos = [p for p in runnable if p.item.kind == "video"]
        for plan in runnable:
            if plan.item.kind == "camera":
                result = ItemResult(
                    plan.item.label,
                    error=f"{plan.item.label}: a camera is read on this machine; "
                    "run it without --ray",
                )
                results.append(result)
                self.reporter.item_done(result)
        self.reporter.start(total_frames(images + videos, self.options))
        if images or videos:
            with ray_session(self.cluster.address) as ray:
                produced = self._distribute(ray, images, videos)
            results.extend(produced)
            # Every worker of this run is done: clear what killed ones left half-written.
            sweep_partials(d for p in images + videos for d in p.outputs(self.options).values())
        summary = InferSummary(results, time.perf_counter() - started)
        self.reporter.finish(summary)
        return summary

    # --- submission ------------------------------------------------------------------------

    def _distribute(self, ray: Any, images: list[Plan], videos: list[Plan]) -> list[ItemResult]:
        tracker = start_tracker(ray)
        plans = images + videos  # key = position in this list
        lost: dict[int, str] = {}
        # Retried without limit by Ray (a lost node may take a while to be declared dead); the
        # tracker gives an input up after MAX_ATTEMPTS attempts that killed their worker.
        video_task = ray.remote(num_cpus=self.cluster.cpus, max_retries=-1, retry_exceptions=False)(
            matte_video
        )
        video_refs = {
            video_task.remote(
                plan_row(plan, len(images) + i), self.spec, self.remote_options, tracker
            ): len(images) + i
            for i, plan in enumerate(videos)
        }
        feeder = None
        if images:
            feeder = threading.Thread(
                target=self._feed_images, args=(ray, images, tracker, lost), daemon=True
            )
            feeder.start()
        produced = self._collect(ray, tracker, feeder, video_refs, lost)
        results = []
        for key, plan in enumerate(plans):
            result = produced.get(key)
            if result is None:
                reason = lost.get(key, "the cluster returned no result")
                result = ItemResult(
                    plan.item.label, error=f"{plan.item.label}: lost on the cluster: {reason}"
                )
                self.reporter.item_done(result)
            results.append(result)
        return results

    def _feed_images(
        self, ray: Any, images: list[Plan], tracker: Any, lost: dict[int, str]
    ) -> None:
        """Run the Ray Data pipeline to the end (in a thread; the main thread reports)."""
        from ray.data import ActorPoolStrategy

        cluster = self.cluster
        available = int(ray.cluster_resources().get("CPU", 1)) // max(1, cluster.cpus)
        workers = cluster.workers or max(1, available)
        batch = max(1, min(cluster.batch_size, math.ceil(len(images) / workers)))
        pool = (
            ActorPoolStrategy(size=workers)
            if cluster.workers
            else ActorPoolStrategy(min_size=1, max_size=workers)
        )
        rows = [plan_row(plan, key) for key, plan in enumerate(images)]
        try:
            dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / batch))
            dataset = dataset.map_batches(
                ImageMatter,
                fn_constructor_kwargs={
                    "spec": self.spec,
                    "options": self.remote_options,
                    "tracker": tracker,
                },
                batch_size=batch,
                num_cpus=cluster.cpus,
                compute=pool,
            )
            for _ in dataset.iter_batches(batch_size=None):
                pass
        except Exception as exc:
            reason = _first_line(exc)
            for key in range(len(images)):
                lost.setdefault(key, reason)

    # --- collection ------------------------------------------------------------------------

    def _collect(
        self,
        ray: Any,
        tracker: Any,
        feeder: threading.Thread | None,
        video_refs: dict[Any, int],
        lost: dict[int, str],
    ) -> dict[int, ItemResult]:
        produced: dict[int, ItemResult] = {}
        frames_shown = 0
        waiting = list(video_refs)
        while True:
            finished = (feeder is None or not feeder.is_alive()) and not waiting
            fresh, frames = ray.get(tracker.drain.remote())
            for key, result in fresh:
                produced[key] = self._localise(result)
                self.reporter.item_done(produced[key])
            if frames > frames_shown:
                self.reporter.advance(frames - frames_shown)
                frames_shown = frames
            if finished:
                return produced
            if waiting:
                ready, waiting = ray.wait(
                    waiting, num_returns=len(waiting), timeout=PROGRESS_INTERVAL
                )
                for ref in ready:
                    try:
                        ray.get(ref)
                    except Exception as exc:  # this video is lost, not the run
                        lost[video_refs[ref]] = _first_line(exc)
            else:
                time.sleep(PROGRESS_INTERVAL)

    def _localise(self, result: ItemResult) -> ItemResult:
        """Output paths as a local run prints them (under ``-o`` as the user wrote it)."""
        outputs = [self.options.output_dir / Path(p).name for p in result.outputs]
        return replace(result, outputs=outputs)
