"""The cluster tests' driver: runs inside a private network namespace that has only loopback.

Ray binds the machine's outward address by itself; these machines allow test traffic only on
loopback. So the pytest test runs this script under ``unshare -n`` (after ``ip link set lo
up``): it starts a real multi-node Ray cluster (``ray.cluster_utils.Cluster``, every node its
own raylet and object store on 127.0.0.1), runs the real ``modnet-tools`` CLI against it with
``--ray <address>``, does the damage a scenario asks for (kills a worker process by its pid,
kills the CLI mid-run, removes a node), watches the output folder, shuts everything down, and
prints one JSON report as its last line of stdout. The test asserts on that report and on the
files.

Usage: ``python driver.py CONFIG.json`` with ``{"xml", "inputs", "compare_inputs", "images",
"video_outputs", "work", "scenarios"}``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

#: Per node: small enough for a shared 2-core test machine (Ray's minimum is 75 MiB).
OBJECT_STORE = 80 * 1024 * 1024
TIMEOUT = 400.0


# --- looking at processes and files -----------------------------------------------------------


def ray_processes() -> dict[int, tuple[str, int]]:
    """Every Ray worker process on the machine: pid -> (process title, parent pid).

    Ray names a worker ``ray::<Actor class or task>``; its parent is the raylet of its node.
    """
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if title.startswith("ray::"):
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (title, ppid)
    return found


def matting_workers(kind: str) -> dict[int, int]:
    """pid -> raylet pid of the workers running image actors (``image``) or videos."""
    marker = "MapWorker" if kind == "image" else "matte_video"
    return {pid: ppid for pid, (title, ppid) in ray_processes().items() if marker in title}


class FolderWatch:
    """Samples an output folder every 50 ms: each file name's distinct inodes (a file published
    twice gets a new inode each time, since every write is a rename of a new file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.inodes: dict[str, set[int]] = {}
        self.workers: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.05)

    def sample(self) -> None:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                self.inodes.setdefault(entry.name, set()).add(entry.inode())
            except OSError:
                continue
        self.workers.update(
            (pid, info)
            for pid, info in ray_processes().items()
            if "MapWorker" in info[0] or "matte_video" in info[0]
        )

    def published(self) -> list[str]:
        return sorted(n for n in os.listdir(self.folder) if not n.startswith("."))

    def __enter__(self) -> FolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Poll ``condition``; fail if it takes too long or if ``proc`` (the CLI) ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise RuntimeError(
                f"the CLI ended (exit {proc.returncode}) before {what}: {err[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- the scenarios -----------------------------------------------------------------------------


class Scenarios:
    def __init__(self, config: dict[str, Any]) -> None:
        from ray.cluster_utils import Cluster

        self.config = config
        self.work = Path(config["work"])
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "object_store_memory": OBJECT_STORE,
                "include_dashboard": False,
            },
        )
        self.nodes = [
            self.cluster.head_node,
            self.cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE),
        ]
        self.cluster.wait_for_nodes()

    def raylet_pids(self) -> dict[int, str]:
        """raylet pid -> node id, for every node alive."""
        from ray._private import ray_constants

        pids = {}
        for node in self.nodes:
            raylet = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET)
            if raylet:
                pids[raylet[0].process.pid] = node.node_id
        return pids

    def infer(
        self, out: Path, *extra: str, inputs: list[str] | None = None
    ) -> subprocess.Popen[str]:
        command = [
            sys.executable,
            "-m",
            "toolkit",
            "infer",
            *(inputs or self.config["inputs"]),
            "-m",
            self.config["xml"],
            "-o",
            str(out),
            "--ray",
            self.cluster.address,
            *extra,
        ]
        return subprocess.Popen(
            command,
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )

    @staticmethod
    def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}

    def nodes_of(self, workers: dict[int, tuple[str, int]]) -> dict[str, list[str]]:
        """Which nodes ran image actors and video tasks (by each worker's raylet)."""
        raylets = self.raylet_pids()
        used: dict[str, set[str]] = {"image": set(), "video": set()}
        for title, ppid in workers.values():
            kind = "image" if "MapWorker" in title else "video"
            if ppid in raylets:
                used[kind].add(raylets[ppid])
        return {k: sorted(v) for k, v in used.items()}

    # --- 1. a plain run, compared with a local infer by the test --------------------------

    def compare(self) -> dict[str, Any]:
        out = self.work / "compare"
        with FolderWatch(out) as watch:
            report = self.finish(self.infer(out, inputs=self.config["compare_inputs"]))
        report["nodes"] = self.nodes_of(watch.workers)
        report["files"] = watch.published()
        return report

    # --- 2. a worker process killed by its pid, mid-run -----------------------------------

    def kill_worker(self) -> dict[str, Any]:
        out = self.work / "kill_worker"
        killed: list[dict[str, Any]] = []
        with FolderWatch(out) as watch:
            proc = self.infer(out)
            # An image actor, once a few images are out and while more are still to come.
            wait_for(
                lambda: len(watch.published()) >= 2 and bool(matting_workers("image")),
                TIMEOUT,
                "the first images",
                proc,
            )
            published = len(watch.published())
            pid, raylet = next(iter(matting_workers("image").items()))
            os.kill(pid, signal.SIGKILL)
            node = self.raylet_pids().get(raylet)
            killed.append(
                {"kind": "image", "pid": pid, "node": node, "published_before": published}
            )
            # The video's worker, while its file is being written (its temporary exists).
            video_name = self.config["video_outputs"][0]

            def video_in_flight() -> bool:
                hidden = [n for n in os.listdir(out) if n.startswith(f".{video_name}.")]
                return bool(hidden) and bool(matting_workers("video"))

            wait_for(
                lambda: video_in_flight() or proc.poll() is not None, TIMEOUT, "the video task"
            )
            if proc.poll() is None and video_name not in watch.published():
                pid, raylet = next(iter(matting_workers("video").items()))
                os.kill(pid, signal.SIGKILL)
                killed.append({"kind": "video", "pid": pid, "node": self.raylet_pids().get(raylet)})
            report = self.finish(proc)
        report["killed"] = killed
        report["nodes"] = self.nodes_of(watch.workers)
        report["files"] = watch.published()
        report["hidden"] = sorted(n for n in os.listdir(out) if n.startswith("."))
        report["inodes"] = {name: len(inodes) for name, inodes in watch.inodes.items()}
        return report

    # --- 3. the whole run killed mid-way, then continued with --skip-existing -------------

    def resume(self) -> dict[str, Any]:
        out = self.work / "resume"
        images = self.config["images"]
        with FolderWatch(out) as watch:
            proc = self.infer(out)
            wait_for(lambda: len(watch.published()) >= 6, TIMEOUT, "the first images", proc)
            proc.kill()  # the driver dies: Ray ends its job's workers
            proc.communicate()
            wait_for(
                lambda: not matting_workers("image") and not matting_workers("video"),
                60,
                "the job's workers to end",
            )
            before = {n: os.stat(out / n).st_ino for n in watch.published()}
            rerun = self.finish(self.infer(out, "--skip-existing"))
        rerun["before"] = before
        rerun["files"] = watch.published()
        rerun["after"] = {n: os.stat(out / n).st_ino for n in watch.published()}
        rerun["hidden"] = sorted(n for n in os.listdir(out) if n.startswith("."))
        rerun["images"] = images
        return rerun

    # --- 4. a whole node lost mid-run ------------------------------------------------------

    def kill_node(self) -> dict[str, Any]:
        out = self.work / "kill_node"
        self.nodes.append(self.cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE))
        self.cluster.wait_for_nodes()

        def busy_worker_node() -> Any:
            """A node other than the head's hosting an image actor, or None."""
            raylets = {pid: node for pid, node in self.raylet_pids().items()}
            hosts = set(matting_workers("image").values())
            for node in self.nodes[1:]:
                if any(raylets.get(pid) == node.node_id for pid in hosts):
                    return node
            return None

        with FolderWatch(out) as watch:
            proc = self.infer(out, "--ray-workers", "3", inputs=self.config["images"])
            wait_for(
                lambda: len(watch.published()) >= 2 and busy_worker_node() is not None,
                TIMEOUT,
                "an image actor on a worker node",
                proc,
            )
            published = len(watch.published())
            doomed = busy_worker_node()
            raylet = next(p for p, n in self.raylet_pids().items() if n == doomed.node_id)
            doomed_workers = [p for p, r in matting_workers("image").items() if r == raylet]
            self.cluster.remove_node(doomed, allow_graceful=False)
            self.nodes.remove(doomed)
            report = self.finish(proc)
        report["killed_node"] = doomed.node_id
        report["killed_workers"] = doomed_workers
        report["published_before"] = published
        report["files"] = watch.published()
        report["hidden"] = sorted(n for n in os.listdir(out) if n.startswith("."))
        report["inodes"] = {name: len(inodes) for name, inodes in watch.inodes.items()}
        return report

    # --- 5. serve --ray: the app in two Ray Serve replicas behind Ray's proxy --------------

    def serve(self) -> dict[str, Any]:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [
            sys.executable, "-m", "toolkit", "serve", "-m", self.config["xml"],
            "--port", str(port), "--replicas", "2", "--ray", self.cluster.address,
        ]  # fmt: skip
        proc = subprocess.Popen(
            command,
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines: list[str] = []

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: any(ln.startswith("serving") for ln in lines), TIMEOUT, "serving", proc)
        replicas = {
            pid: ppid
            for pid, (title, ppid) in ray_processes().items()
            if "ServeReplica" in title and "MattingReplica" in title
        }
        photo = Path(self.config["serve_photo"]).read_bytes()
        answers = []
        for _ in range(int(self.config.get("serve_requests", 6))):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/matte",
                data=photo,
                headers={"Content-Type": "application/octet-stream"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                answers.append(response.read())
        alpha = self.work / "served_alpha.png"
        alpha.write_bytes(answers[0])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        reader.join(timeout=10)
        raylets = self.raylet_pids()
        return {
            "rc": rc,
            "stderr": "".join(lines),
            "replicas": len(replicas),
            "replica_nodes": sorted({raylets.get(ppid, "?") for ppid in replicas.values()}),
            "answers": len(answers),
            "distinct_answers": len(set(answers)),
            "alpha": str(alpha),
            "left_after_stop": sum(
                "ServeReplica" in title and "MattingReplica" in title
                for title, _ in ray_processes().values()
            ),
        }

    def shutdown(self) -> None:
        self.cluster.shutdown()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    for name in ("compare", "kill_worker", "resume", "kill_node", "serve"):
        (Path(config["work"]) / name).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    scenarios = Scenarios(config)
    try:
        report["nodes"] = len(scenarios.nodes)
        report["address"] = scenarios.cluster.address
        for name in config["scenarios"]:
            started = time.monotonic()
            try:
                report[name] = getattr(scenarios, name)()
            except Exception as exc:  # report it; the test fails with the reason
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            report[name]["seconds"] = round(time.monotonic() - started, 1)
    finally:
        scenarios.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
