"""``infer --ray`` on a real multi-node Ray cluster, against a local ``infer`` of the same inputs.

One driver run (``driver.py``, inside a private network namespace with only loopback, as the
network rule requires) starts a two-node cluster with ``ray.cluster_utils.Cluster``, runs the
scenarios, shuts the cluster down and reports; each test below asserts on one scenario:

* a plain run writes byte-identical files to a local run (photos, a video, a broken photo
  failing alone with the same summary and exit code), with work on both nodes;
* a worker process killed by its pid mid-run (an image actor, then the video's task while its
  file is being written): the run completes, every output whole and written once;
* the whole run killed mid-way, then ``--skip-existing``: only the rest is done;
* a whole node removed mid-run: its work is redone elsewhere and the run completes;
* ``serve --ray --replicas 2``: two replicas behind Ray's proxy answer with ``infer``'s bytes,
  and SIGTERM stops them and exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.cluster.fixtures import Archive, LocalRun, cli
from tests.matting.fixtures import InferModel

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("driver.py")
REPO = Path(__file__).resolve().parents[2]


def namespace_problem() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root for `unshare -n` (CI runs as root)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (util-linux / iproute2)"
    return None


def in_namespace(*command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a new network namespace whose only interface is loopback."""
    script = "ip link set lo up && exec " + " ".join(f"'{c}'" for c in command)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def report(
    archive: Archive,
    infer_model: InferModel,
    local_reference: LocalRun,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    problem = namespace_problem()
    if problem:
        pytest.skip(f"Ray cluster tests run in a loopback-only network namespace: {problem}")
    work = tmp_path_factory.mktemp("cluster")
    config = {
        "xml": str(infer_model.xml),
        "inputs": [str(archive.folder)],
        "compare_inputs": [str(archive.folder), str(archive.broken)],
        "images": [str(p) for p in archive.photos],
        "video_outputs": sorted(
            n for n in os.listdir(local_reference.out) if n.startswith(f"{archive.video.stem}_")
        ),
        "work": str(work),
        "serve_photo": str(archive.photos[1]),
        "scenarios": ["compare", "kill_worker", "resume", "serve", "kill_node"],
    }
    (work / "config.json").write_text(json.dumps(config))
    proc = in_namespace(sys.executable, str(DRIVER), str(work / "config.json"), timeout=1500)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(lines[-1])
    result["work"] = work
    return result


def scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    part: dict[str, Any] = report[name]
    assert "error" not in part, part["error"]
    return part


def expected_files(local: LocalRun, without: str | None = None) -> list[str]:
    return sorted(n for n in os.listdir(local.out) if without is None or not n.startswith(without))


def video_frames(path: Path) -> npt.NDArray[np.uint8]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.asarray(frames)


def assert_same_files(out: Path, local: LocalRun, names: list[str]) -> None:
    """The same names; images byte-identical; videos the same frames, decoded.

    A video is compared by its decoded frames, within 8/255: the H.264 files of two *local*
    runs of the same command were seen to differ (a few frame sizes) on this loaded machine,
    so byte equality of videos is not something a local run itself guarantees.
    """
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == names
    for name in names:
        ours, theirs = out / name, local.out / name
        if name.endswith((".png", ".jpg")):
            assert ours.read_bytes() == theirs.read_bytes(), name
            continue
        a, b = video_frames(ours), video_frames(theirs)
        assert a.shape == b.shape and len(a) > 0, (name, a.shape, b.shape)
        difference = np.abs(a.astype(np.int16) - b)
        assert difference.max() <= 8 and difference.mean() < 0.5, name
    assert [n for n in os.listdir(out) if n.startswith(".")] == []  # no temporaries left


def normalised(stdout: str) -> list[str]:
    """Stdout lines with each output path cut to its name (the runs write to different -o)."""
    lines = []
    for line in stdout.splitlines():
        label, sep, outputs = line.partition(" -> ")
        names = ", ".join(Path(o).name for o in outputs.split(", ")) if sep else ""
        lines.append(label + sep + names)
    return sorted(lines)


def item_lines(stdout: str) -> dict[str, int]:
    """How often each input is reported on stdout."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        label = line.split(" -> ")[0].split(": skipped")[0]
        counts[label] = counts.get(label, 0) + 1
    return counts


def test_a_two_node_cluster_ran_the_work_on_both_nodes(report: dict[str, Any]) -> None:
    assert report["nodes"] >= 2
    assert report["address"].startswith("127.0.0.1:")
    nodes = scenario(report, "compare")["nodes"]
    assert len(set(nodes["image"]) | set(nodes["video"])) >= 2, nodes


def test_outputs_identical_to_a_local_infer(
    report: dict[str, Any], local_reference: LocalRun, archive: Archive
) -> None:
    part = scenario(report, "compare")
    local = local_reference.proc
    assert part["rc"] == local.returncode == 1  # the broken photo fails, alone, as locally
    assert_same_files(report["work"] / "compare", local_reference, expected_files(local_reference))
    # The same lines: one per input, the same output names.
    assert normalised(part["stdout"]) == normalised(local.stdout)
    errors = [ln for ln in part["stderr"].splitlines() if ln.startswith("error:")]
    assert errors == [ln for ln in local.stderr.splitlines() if ln.startswith("error:")]
    assert any(str(archive.broken) in ln for ln in errors)
    summary = f"frames from {len(archive.photos) + 2} inputs"
    assert summary in part["stderr"] and summary in local.stderr


def test_a_worker_killed_mid_run_has_its_work_redone_and_nothing_written_twice(
    report: dict[str, Any], local_reference: LocalRun, archive: Archive
) -> None:
    part = scenario(report, "kill_worker")
    kinds = [k["kind"] for k in part["killed"]]
    assert "image" in kinds and "video" in kinds, part["killed"]
    assert all(k["pid"] > 0 and k["node"] for k in part["killed"])
    assert part["killed"][0]["published_before"] < 2 * len(archive.photos)  # really mid-run
    assert part["rc"] == 0, part["stderr"]
    out = report["work"] / "kill_worker"
    assert_same_files(out, local_reference, expected_files(local_reference, "broken"))
    # Every published file was published once (a rewrite would show a second inode).
    assert {n: c for n, c in part["inodes"].items() if not n.startswith(".") and c != 1} == {}
    # Every input reported exactly once; the summary counts each once.
    counts = item_lines(part["stdout"])
    assert len(counts) == len(archive.photos) + 1 and set(counts.values()) == {1}
    assert f"from {len(archive.photos) + 1} inputs" in part["stderr"]


def test_skip_existing_after_an_interrupted_run_does_only_the_rest(
    report: dict[str, Any], local_reference: LocalRun, archive: Archive
) -> None:
    part = scenario(report, "resume")
    assert part["rc"] == 0, part["stderr"]
    before: dict[str, int] = part["before"]
    done_before = {
        p.stem
        for p in archive.photos
        if {f"{p.stem}_alpha.png", f"{p.stem}_rgba.png"} <= set(before)
    }
    assert 0 < len(done_before) < len(archive.photos)  # the first run really was cut short
    skipped = {
        Path(line.split(": skipped")[0]).stem
        for line in part["stdout"].splitlines()
        if ": skipped" in line
    }
    assert skipped == done_before
    redone = {
        Path(line.split(" -> ")[0]).stem for line in part["stdout"].splitlines() if " -> " in line
    }
    assert redone == {p.stem for p in archive.photos} - done_before | {archive.video.stem}
    # The skipped inputs' files were not touched; the rest is identical to a local run.
    for stem in done_before:
        for name in (f"{stem}_alpha.png", f"{stem}_rgba.png"):
            assert part["after"][name] == before[name], name
    out = report["work"] / "resume"
    assert_same_files(out, local_reference, expected_files(local_reference, "broken"))
    assert f"({len(done_before)} skipped: already done)" in part["stderr"]


def test_a_node_lost_mid_run_has_its_work_redone_elsewhere(
    report: dict[str, Any], local_reference: LocalRun, archive: Archive
) -> None:
    part = scenario(report, "kill_node")
    assert part["killed_workers"], part
    assert part["published_before"] < 2 * len(archive.photos)
    assert part["rc"] == 0, part["stderr"]
    names = [n for n in expected_files(local_reference) if n.startswith("photo")]
    assert_same_files(report["work"] / "kill_node", local_reference, names)
    counts = item_lines(part["stdout"])
    assert len(counts) == len(archive.photos) and set(counts.values()) == {1}


def test_serve_on_ray_answers_through_ray_serve_with_infers_bytes(
    report: dict[str, Any], archive: Archive, infer_model: InferModel, tmp_path: Path
) -> None:
    part = scenario(report, "serve")
    assert part["replicas"] == 2, part["stderr"]  # two replica processes, found by title
    assert "2 Ray Serve replica(s) on http://127.0.0.1:" in part["stderr"]
    assert part["answers"] == 6 and part["distinct_answers"] == 1
    # The answer is the matte a local `infer` writes for the same photo, to the last bit but
    # for a few pixels: a replica's OpenVINO runs one image on its one CPU's thread, a local
    # run on every core, and latency mode splits the work by thread (1/255 on ~1% of pixels).
    local = cli("infer", archive.photos[1], "-m", infer_model.xml, "-o", "out", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    expected = cv2.imread(str(tmp_path / "out" / f"{archive.photos[1].stem}_alpha.png"), 0)
    served = cv2.imread(part["alpha"], cv2.IMREAD_UNCHANGED)
    assert served is not None and served.shape == expected.shape
    difference = np.abs(served.astype(np.int16) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.02
    assert part["rc"] == 0 and part["stderr"].rstrip().endswith("stopped"), part["stderr"]
    assert part["left_after_stop"] == 0
