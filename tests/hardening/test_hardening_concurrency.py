"""Concurrency: several real processes on the same folders at the same time.

* ``download``: three processes on one output folder and one cache; a ``--force`` run racing
  a normal one; two models whose file is the same bytes (one cache entry). Every run ends 0,
  the server is asked once per file where a lock makes the others wait, and the final path
  is watched while they run: whenever it exists it holds the whole, verified file.
* ``convert``: two runs into the same output folder, with the same checkpoint (with
  verification, which reads the IR the other run may be replacing) and with two different
  checkpoints (the IR left at the end must be one run's .xml with the same run's .bin).
* ``infer``: two runs writing the same results: every result file is whole.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from tests.convert.fixtures import Converted
from tests.download.fixtures_http import FileServer, FileSpec, ModelSpec, payload, write_model
from tests.hardening.fixtures import finish, leftovers, spawn, visible_files
from tests.matting.fixtures import InferModel

WEBCAM = "modnet-webcam-portrait-matting"


class Watcher:
    """Polls a final path in a thread while processes run; records every content it saw
    there that was not the expected bytes (a torn or unverified file)."""

    def __init__(self, path: Path, expected: bytes) -> None:
        self.path, self.expected = path, expected
        self.seen = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.002)  # frequent, without starving the processes under test
            try:
                data = self.path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
            self.seen += 1
            if data != self.expected:
                self.bad.append(
                    f"{len(data)} bytes, sha384 {hashlib.sha384(data).hexdigest()[:12]}"
                )

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _download_args(model: ModelSpec, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["download", "--name", model.name, "--models-dir", model.models_dir, "-o", out, *extra]


def _cache_entry(cache: Path, data: bytes) -> Path:
    digest = hashlib.sha384(data).hexdigest()
    return cache / "1" / digest[:2] / digest[2:]


def test_three_downloads_share_one_output_and_one_cache(
    http_server: FileServer, tmp_path: Path
) -> None:
    """A model with two files; three processes at once, same -o and --cache-dir."""
    big, small = payload(600_000, seed=1), payload(150_000, seed=2)
    urls = [
        http_server.add("/big.ckpt", big, chunk_delay=0.005),
        http_server.add("/small.bin", small, chunk_delay=0.005),
    ]
    model = write_model(
        tmp_path / "models",
        "shared-model",
        [(FileSpec("big.ckpt", big), [urls[0]]), (FileSpec("sub/small.bin", small), [urls[1]])],
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    final = out / "public" / "shared-model" / "big.ckpt"
    with Watcher(final, big) as watcher:
        procs = [
            spawn(*_download_args(model, out, "--cache-dir", cache), cwd=tmp_path) for _ in range(3)
        ]
        results = [finish(p) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    assert watcher.bad == [] and watcher.seen > 0
    assert final.read_bytes() == big
    assert (out / "public" / "shared-model" / "sub" / "small.bin").read_bytes() == small
    assert _cache_entry(cache, big).read_bytes() == big
    assert _cache_entry(cache, small).read_bytes() == small
    # The lock makes the others wait and then keep the verified file: one fetch per file.
    assert len(http_server.requests_for("/big.ckpt")) == 1
    assert len(http_server.requests_for("/small.bin")) == 1
    assert leftovers(out) == [] and leftovers(cache) == []
    assert list((cache / "1" / "staging").iterdir()) == []


def test_a_forced_download_racing_a_normal_one(
    http_server: FileServer, served_model, tmp_path: Path
) -> None:
    model: ModelSpec = served_model(size=800_000, chunk_delay=0.005)
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = spawn(*_download_args(model, out, "--cache-dir", cache), cwd=tmp_path)
    finish(first)
    with Watcher(model.path_in(out), model.data) as watcher:
        procs = [
            spawn(*_download_args(model, out, "--cache-dir", cache, "--force"), cwd=tmp_path),
            spawn(*_download_args(model, out, "--cache-dir", cache), cwd=tmp_path),
        ]
        results = [finish(p) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    assert watcher.bad == [] and watcher.seen > 0
    assert model.path_in(out).read_bytes() == model.data
    assert _cache_entry(cache, model.data).read_bytes() == model.data
    assert leftovers(out) == [] and leftovers(cache) == []


def test_two_models_with_the_same_bytes_share_one_cache_entry(
    http_server: FileServer, tmp_path: Path
) -> None:
    data = payload(700_000, seed=5)
    models = tmp_path / "models"
    specs = [
        write_model(
            models,
            name,
            [
                (
                    FileSpec(f"{name}.ckpt", data),
                    [http_server.add(f"/{name}.ckpt", data, chunk_delay=0.005)],
                )
            ],
        )
        for name in ("twin-a", "twin-b")
    ]
    cache = tmp_path / "cache"
    procs = [
        spawn(*_download_args(spec, tmp_path / spec.name, "--cache-dir", cache), cwd=tmp_path)
        for spec in specs
    ]
    results = [finish(p) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    for spec in specs:
        assert spec.path_in(tmp_path / spec.name).read_bytes() == data
    assert _cache_entry(cache, data).read_bytes() == data
    fetched = len(http_server.requests_for("/twin-a.ckpt")) + len(
        http_server.requests_for("/twin-b.ckpt")
    )
    assert fetched == 1, "the cache lock makes the second model copy the first one's bytes"
    assert leftovers(cache) == []


# --- convert -------------------------------------------------------------------------------------


def _ir_checkpoint_sha(xml: Path) -> str:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return str(model.get_rt_info(["modnet_tools", "source_checkpoint_sha384"]).astype(str))


def _sha384(path: Path) -> str:
    return hashlib.sha384(path.read_bytes()).hexdigest()


def _run_pair(args_a: list[str | Path], args_b: list[str | Path], cwd: Path) -> list[str]:
    """Start both at once; return their stdouts once both succeeded."""
    procs = [spawn(*args_a, cwd=cwd), spawn(*args_b, cwd=cwd)]
    results = [finish(p, timeout=400) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, (out[-3000:], err[-3000:])
        assert "Traceback" not in err
    return [out for out, _ in results]


@pytest.mark.slow
def test_two_converts_of_one_checkpoint_into_one_folder(
    tame_checkpoint: Path, tmp_path: Path
) -> None:
    """Both would verify (reading the IR the other may be replacing): they take turns, so
    one does the work and the other finds it up to date; the folder ends with one good IR
    per precision."""
    out = tmp_path / "out"
    args: list[str | Path] = ["convert", "--checkpoint", tame_checkpoint, "-o", out]
    stdouts = _run_pair(args, args, tmp_path)
    assert sorted("up to date (use --force" in s for s in stdouts) == [False, True], stdouts
    assert sum("wrote" in s and "Verifying" in s for s in stdouts) == 1, stdouts
    sha = _sha384(tame_checkpoint)
    for precision in ("FP16", "FP32"):
        xml = out / "public" / WEBCAM / precision / f"{WEBCAM}.xml"
        assert xml.with_suffix(".bin").is_file()
        assert _ir_checkpoint_sha(xml) == sha
    assert leftovers(out) == []
    assert sorted(p.name for p in visible_files(out)) == sorted(
        [f"{WEBCAM}.xml", f"{WEBCAM}.bin"] * 2 + ["modnet_webcam_portrait_matting.onnx"]
    )


@pytest.mark.slow
def test_two_converts_of_different_checkpoints_never_mix_xml_and_bin(
    converted_tame: Converted, converted_touchy: Converted, tmp_path: Path
) -> None:
    """The IR left at the end is whole: its .bin is the one its .xml was saved with (compared
    with the same checkpoint converted alone), never the other run's weights."""
    out = tmp_path / "out"
    base = ["convert", "-o", out, "--no-verify", "--precision", "FP32", "--checkpoint"]
    _run_pair([*base, converted_tame.checkpoint], [*base, converted_touchy.checkpoint], tmp_path)
    xml = out / "public" / WEBCAM / "FP32" / f"{WEBCAM}.xml"
    by_sha = {
        _sha384(c.checkpoint): c.fp32.with_suffix(".bin")
        for c in (converted_tame, converted_touchy)
    }
    reference_bin = by_sha[_ir_checkpoint_sha(xml)]
    assert xml.with_suffix(".bin").read_bytes() == reference_bin.read_bytes()
    assert leftovers(out) == []


# --- infer ---------------------------------------------------------------------------------------


@pytest.fixture
def photos(sample_photo: Path, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.png").write_bytes(sample_photo.read_bytes())
    yield folder


@pytest.mark.slow
def test_two_infers_writing_the_same_results(
    infer_model: InferModel, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["infer", photos, "-o", out, "--model", infer_model.xml, "--background", "omz"]
    procs = [spawn(*args, cwd=tmp_path), spawn(*args, cwd=tmp_path)]
    for proc in procs:
        _, err = finish(proc)
        assert proc.returncode == 0, err
    assert leftovers(out) == []
    files = visible_files(out)
    assert len(files) == 6 * 3
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[:2] == (512, 512), path


def test_watcher_sees_a_wrong_file(tmp_path: Path) -> None:
    """The watcher used above can fail: it reports content that is not the expected bytes."""
    target = tmp_path / "f"
    with Watcher(target, b"right") as watcher:
        target.write_bytes(b"wrong")
        deadline = time.monotonic() + 10
        while watcher.seen == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert watcher.bad and json.dumps(watcher.bad)
