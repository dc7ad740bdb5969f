"""``modnet-tools download`` as omz_downloader's users run it: selection, output layout,
JSON progress, keep-if-verified, the cache, the mirror and offline mode, jobs, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.download.fixtures_http import (
    Fault,
    FileServer,
    FileSpec,
    ModelSpec,
    fast_env,
    free_port,
    payload,
    write_model,
)
from tests.helpers import assert_one_line_error


def dl(run_cli: RunCli, model: ModelSpec, out: Path, *extra: str | Path, server: FileServer | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run_cli(
        "download",
        "--name",
        model.name,
        "--models-dir",
        model.models_dir,
        "-o",
        out,
        *extra,
        env={**fast_env(server), **(env or {})},
    )


# -- selection and usage -------------------------------------------------------------------


def test_print_all_lists_both_models(run_cli: RunCli) -> None:
    proc = run_cli("download", "--print-all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "modnet-photographic-portrait-matting",
        "modnet-webcam-portrait-matting",
    ]


def test_print_all_includes_models_dir_configs(run_cli: RunCli, tmp_path: Path) -> None:
    write_model(tmp_path / "m", "extra-model", [(FileSpec("a.bin", b"a"), ["http://x.invalid/a"])])
    nested = tmp_path / "m2" / "nested-model"
    nested.mkdir(parents=True)
    write_model(nested, "tmp", [(FileSpec("b.bin", b"b"), ["http://x.invalid/b"])])
    (nested / "tmp.yml").rename(nested / "model.yml")
    proc = run_cli(
        "download", "--print-all", "--models-dir", tmp_path / "m", "--models-dir", tmp_path / "m2"
    )
    assert proc.returncode == 0, proc.stderr
    assert {"extra-model", "nested-model", "modnet-webcam-portrait-matting"} <= set(
        proc.stdout.split()
    )


def test_no_matching_model_is_exit_1(run_cli: RunCli) -> None:
    proc = run_cli("download", "--name", "resnet*")
    assert_one_line_error(proc, 'No matching models: "resnet*"')


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num-attempts", "0"], "num-attempts"),
        (["--progress-format", "xml"], "progress-format"),
        (["--jobs", "0"], "jobs"),
        (["--mirror", "ftp://example.invalid/m"], "--mirror must be an http"),
        (["--name", "x", "--all"], "only one of"),
        (["--list", "/nonexistent/list.txt"], "cannot read model list"),
    ],
)
def test_bad_usage_is_exit_2(run_cli: RunCli, args: list[str], needle: str) -> None:
    proc = run_cli("download", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_precision_is_exit_1(run_cli: RunCli) -> None:
    proc = run_cli("download", "--precisions", "FP16,INT3")
    assert_one_line_error(proc, "Unknown precisions specified: INT3")


def test_bad_config_names_file_and_field(run_cli: RunCli, tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model(models, "broken", [(FileSpec("a.bin", b"abc"), ["http://x.invalid/a"])])
    text = (models / "broken.yml").read_text().replace("size: 3", "size: three")
    (models / "broken.yml").write_text(text)
    proc = run_cli("download", "--print-all", "--models-dir", models)
    assert_one_line_error(proc, "broken.yml", "files.0.size")


# -- a normal download ---------------------------------------------------------------------


def test_download_writes_omz_layout_and_json_events(
    http_server: FileServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """The JSON stream has exactly OMZ's event types and fields, and nothing else."""
    a, b = payload(150_000, 1), payload(5_000, 2)
    model = write_model(
        tmp_path / "models",
        "json-model",
        [
            (FileSpec("weights.ckpt", a), [http_server.add("/w", a)]),
            (FileSpec("src/models/sub.py", b), [http_server.add("/s", b)]),
        ],
    )
    out = tmp_path / "out"
    proc = dl(run_cli, model, out, "--progress-format", "json", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (out / "public/json-model/weights.ckpt").read_bytes() == a
    assert (out / "public/json-model/src/models/sub.py").read_bytes() == b

    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON
    fields = {
        "model_download_begin": ["$type", "model", "num_files"],
        "model_file_download_begin": ["$type", "model", "model_file", "size"],
        "model_file_download_progress": ["$type", "model", "model_file", "size"],
        "model_file_download_end": ["$type", "model", "model_file", "successful"],
        "model_download_end": ["$type", "model", "successful"],
    }
    for event in events:
        assert list(event) == fields[event["$type"]], event
        assert event["model"] == "json-model"
    assert events[0] == {"$type": "model_download_begin", "model": "json-model", "num_files": 2}
    assert events[-1] == {"$type": "model_download_end", "model": "json-model", "successful": True}
    for name, data in (("weights.ckpt", a), ("src/models/sub.py", b)):
        mine = [e for e in events if e.get("model_file") == name]
        assert mine[0] == {
            "$type": "model_file_download_begin",
            "model": "json-model",
            "model_file": name,
            "size": len(data),
        }
        assert mine[-1]["$type"] == "model_file_download_end" and mine[-1]["successful"] is True
        sizes = [e["size"] for e in mine[1:-1]]
        assert sizes == sorted(sizes) and sizes[-1] == len(data)
        assert all(e["$type"] == "model_file_download_progress" for e in mine[1:-1])


def test_json_stream_on_failure(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model(Fault("status", times=-1, status=404))
    proc = dl(run_cli, model, tmp_path / "o", "--progress-format", "json", server=http_server)
    assert_one_line_error(proc, "HTTP 404")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["$type"] for e in events] == [
        "model_download_begin",
        "model_file_download_begin",
        "model_file_download_end",
        "model_download_end",
    ]
    assert events[2]["successful"] is False and events[3]["successful"] is False


def test_text_output_and_failed_summary(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    ok = served_model(name="good-model")
    bad = served_model(Fault("status", times=-1, status=404), name="bad-model")
    proc = run_cli(
        "download", "--name", "good-model,bad-model", "--models-dir", ok.models_dir,
        "-o", tmp_path / "o", env=fast_env(http_server),
    )  # fmt: skip
    assert_one_line_error(proc, "bad-model")
    assert "################|| Downloading good-model ||################" in proc.stdout
    assert f"========== Downloading {tmp_path / 'o' / 'public/good-model'}" in proc.stdout
    assert "... 100%," in proc.stdout
    assert proc.stdout.rstrip().endswith("FAILED:\nbad-model")
    assert ok.path_in(tmp_path / "o").read_bytes() == ok.data  # one failure does not stop others
    assert not bad.path_in(tmp_path / "o").exists()


def test_default_output_dir_is_modnet_tools_home(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    home = tmp_path / "home"
    proc = run_cli(
        "download", "--name", model.name, "--models-dir", model.models_dir,
        env={**fast_env(http_server), "MODNET_TOOLS_HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(home).read_bytes() == model.data


def test_models_dir_from_environment(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    proc = run_cli(
        "download", "--name", model.name, "-o", tmp_path / "o",
        env={**fast_env(http_server), "MODNET_TOOLS_MODELS_DIR": str(model.models_dir)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "o").is_file()


def test_omz_underscore_aliases(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    proc = run_cli(
        "download", "--name", model.name, "--models_dir", model.models_dir,
        "--output_dir", tmp_path / "o", "--cache_dir", tmp_path / "c", "--num_attempts", "2",
        "--progress_format=json", env=fast_env(http_server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "o").is_file()
    assert json.loads(proc.stdout.splitlines()[0])["$type"] == "model_download_begin"


def test_list_file_selects_models(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    one = served_model(name="list-one")
    served_model(name="list-two")
    listing = tmp_path / "models.lst"
    listing.write_text("# the models to fetch\nlist-o*   # a wildcard\n\n")
    proc = run_cli(
        "download", "--list", listing, "--models-dir", one.models_dir, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert one.path_in(tmp_path / "o").is_file()
    assert not (tmp_path / "o/public/list-two").exists()


def test_jobs_download_models_in_parallel(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    models = [served_model(name=f"par-{i}", chunk_delay=0.005, seed=i) for i in range(3)]
    proc = run_cli(
        "download", "--name", "par-*", "--models-dir", models[0].models_dir, "-j", "3",
        "-o", tmp_path / "o", "--progress-format", "json", env=fast_env(http_server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for m in models:
        assert m.path_in(tmp_path / "o").read_bytes() == m.data
    ends = [json.loads(x) for x in proc.stdout.splitlines()]
    assert sorted(e["model"] for e in ends if e["$type"] == "model_download_end") == [
        "par-0",
        "par-1",
        "par-2",
    ]


def test_precisions_filter_precision_folders(http_server: FileServer, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    f16, f32, common = b"16" * 100, b"32" * 100, b"common"
    model = write_model(
        tmp_path / "models",
        "ir-model",
        [
            (FileSpec("FP16/ir-model.bin", f16), [http_server.add("/16", f16)]),
            (FileSpec("FP32/ir-model.bin", f32), [http_server.add("/32", f32)]),
            (FileSpec("labels.txt", common), [http_server.add("/c", common)]),
        ],
    )
    out = tmp_path / "o"
    proc = dl(run_cli, model, out, "--precisions", "FP16", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert (out / "public/ir-model/FP16/ir-model.bin").read_bytes() == f16
    assert (out / "public/ir-model/labels.txt").read_bytes() == common
    assert not (out / "public/ir-model/FP32").exists()


# -- keeping verified files, --force, stale files -------------------------------------------


def test_verified_file_is_kept_and_force_downloads_again(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    out = tmp_path / "o"
    path = f"/files/{model.name}.ckpt"
    assert dl(run_cli, model, out, server=http_server).returncode == 0
    mtime = model.path_in(out).stat().st_mtime_ns
    again = dl(run_cli, model, out, server=http_server)
    assert again.returncode == 0, again.stderr
    assert "already present; size and sha384 match" in again.stdout
    assert len(http_server.requests_for(path)) == 1
    assert model.path_in(out).stat().st_mtime_ns == mtime
    forced = dl(run_cli, model, out, "--force", server=http_server)
    assert forced.returncode == 0, forced.stderr
    assert len(http_server.requests_for(path)) == 2
    assert model.path_in(out).read_bytes() == model.data


def test_wrong_file_at_destination_is_replaced(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"<html>not a checkpoint</html>" + b" " * (len(model.data) - 29))
    proc = dl(run_cli, model, tmp_path / "o", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert final.read_bytes() == model.data


def test_wrong_file_at_destination_is_left_alone_when_download_fails(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    """The user's own file is never deleted before a verified replacement exists."""
    model = served_model(Fault("status", times=-1, status=404))
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"x" * len(model.data))
    proc = dl(run_cli, model, tmp_path / "o", server=http_server)
    assert_one_line_error(proc, "HTTP 404", "left in place")
    assert final.read_bytes() == b"x" * len(model.data)


def test_truncated_file_left_by_omz_downloader_is_continued(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    """omz_downloader writes in place; its interrupted download is continued, not restarted."""
    model = served_model()
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    final.write_bytes(model.data[:70_000])
    proc = dl(run_cli, model, tmp_path / "o", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert final.read_bytes() == model.data
    gets = http_server.requests_for(f"/files/{model.name}.ckpt")
    assert [g.range_start for g in gets] == [70_000]


def test_truncated_garbage_at_destination_is_restarted(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"\0" * 70_000)  # continuing it gives a wrong hash: start from zero
    proc = dl(run_cli, model, tmp_path / "o", "--num-attempts", "1", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert final.read_bytes() == model.data
    gets = http_server.requests_for(f"/files/{model.name}.ckpt")
    assert [g.range_start for g in gets] == [70_000, None]


# -- cache, mirror, offline ----------------------------------------------------------------


def test_cache_in_omz_format_serves_later_runs(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    cache = tmp_path / "cache"
    checksum = model.files[0].checksum
    assert (
        dl(run_cli, model, tmp_path / "o1", "--cache-dir", cache, server=http_server).returncode
        == 0
    )
    entry = cache / "1" / checksum[:2] / checksum[2:]
    assert entry.read_bytes() == model.data
    assert list((cache / "1" / "staging").iterdir()) == []

    http_server.routes.clear()  # the source is gone: only the cache can serve the file
    proc = dl(run_cli, model, tmp_path / "o2", "--cache-dir", cache, server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert "Retrieving" in proc.stdout and "from the cache" in proc.stdout
    assert model.path_in(tmp_path / "o2").read_bytes() == model.data


def test_corrupt_cache_entry_falls_back_to_download(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    cache = tmp_path / "cache"
    checksum = model.files[0].checksum
    entry = cache / "1" / checksum[:2] / checksum[2:]
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"\0" * len(model.data))  # right size, wrong bytes
    proc = dl(run_cli, model, tmp_path / "o", "--cache-dir", cache, server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert "wrong sha384" in proc.stdout
    assert model.path_in(tmp_path / "o").read_bytes() == model.data
    assert entry.read_bytes() == model.data  # repaired


def test_offline_without_cache_or_mirror_fails_clearly(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    proc = dl(run_cli, model, tmp_path / "o", "--offline", server=http_server)
    assert_one_line_error(proc, "not available offline")
    assert http_server.log == []


def test_offline_keeps_a_verified_file(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    assert dl(run_cli, model, tmp_path / "o", server=http_server).returncode == 0
    proc = dl(run_cli, model, tmp_path / "o", "--offline", server=http_server)
    assert proc.returncode == 0, proc.stderr
    assert len(http_server.log) == 1


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "http.server exited"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("http.server did not start")


def test_offline_workflow_with_python_http_server_as_mirror(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    """The README's recipe: download once, serve the folder, point --mirror at it."""
    model = served_model()
    first = tmp_path / "first"
    assert dl(run_cli, model, first, server=http_server).returncode == 0
    port = free_port()
    mirror = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", first],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, mirror)
        proc = dl(
            run_cli, model, tmp_path / "second", "--offline", server=http_server,
            env={"MODNET_TOOLS_MIRROR": f"http://127.0.0.1:{port}/"},
        )  # fmt: skip
        online = dl(
            run_cli, model, tmp_path / "third", "--mirror", f"http://127.0.0.1:{port}",
            server=http_server,
        )  # fmt: skip
    finally:
        mirror.terminate()
        mirror.wait(10)
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "second").read_bytes() == model.data
    assert online.returncode == 0, online.stderr
    assert model.path_in(tmp_path / "third").read_bytes() == model.data
    assert len(http_server.log) == 1  # only the first download touched the real source


def test_mirror_without_the_file_falls_back_to_sources(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    proc = dl(
        run_cli, model, tmp_path / "o", "--mirror", http_server.url + "/mirror", server=http_server
    )
    assert proc.returncode == 0, proc.stderr
    mirror_path = f"/mirror/public/{model.name}/{model.files[0].name}"
    assert [r.path for r in http_server.log] == [mirror_path, f"/files/{model.name}.ckpt"]


def test_offline_mirror_missing_file_fails(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    proc = dl(
        run_cli, model, tmp_path / "o", "--offline", "--mirror", http_server.url + "/mirror",
        server=http_server,
    )  # fmt: skip
    assert_one_line_error(proc, "mirror", "HTTP 404")
    assert [r.path for r in http_server.log] == [
        f"/mirror/public/{model.name}/{model.files[0].name}"
    ]


# -- the environment: proxies ---------------------------------------------------------------


def test_proxy_comes_from_the_environment(http_server: FileServer, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    data = payload(50_000, 9)
    http_server.add("/via-proxy/file.ckpt", data)
    url = (
        "http://modnet-tools-proxy-test.invalid/via-proxy/file.ckpt"  # resolvable only by the proxy
    )
    model = write_model(tmp_path / "models", "proxied", [(FileSpec("p.ckpt", data), [url])])
    env = {"HTTP_PROXY": http_server.url, "http_proxy": http_server.url}
    proc = dl(run_cli, model, tmp_path / "o", server=http_server, env=env)
    assert proc.returncode == 0, proc.stderr
    assert model.path_in(tmp_path / "o").read_bytes() == data
    [request] = http_server.log
    assert request.absolute  # the proxy received an absolute-form request
    assert request.headers["host"] == "modnet-tools-proxy-test.invalid"


def test_unwritable_output_is_one_line_error(http_server: FileServer, served_model, run_cli: RunCli, tmp_path: Path) -> None:  # fmt: skip
    model = served_model()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "public").write_text("a file where a folder should be")
    proc = dl(run_cli, model, tmp_path / "o", server=http_server)
    assert_one_line_error(proc, "cannot write", "public")
