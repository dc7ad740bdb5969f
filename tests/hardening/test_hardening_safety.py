"""Data safety, conversion and bounds (issue 11, items 3, 5, 6, 7, 8, 13, 14, 16), through
the real CLI where a user would meet each fault.

Each test is a class of defect, tried with several members: unique output names whatever
the inputs are called; no output over an input or over a file of another kind; a user's file
at a download destination never deleted before a verified replacement exists; every option
validated before any work; verification that cannot fail a correct IR on a flat image; IRs
that are not matting networks refused; every count bounded; the network's input size bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import typer

from tests.conftest import REPO, RunCli
from tests.convert.fixtures import WEBCAM
from tests.download.fixtures_http import Fault, FileServer, ModelSpec, fast_env
from tests.helpers import assert_one_line_error
from tests.matting.fixtures import InferModel


def _usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, one ``error:`` line, no traceback, each needle in it."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle.lower() in proc.stderr.lower(), (needle, proc.stderr)


def _photo(path: Path, seed: int, size: tuple[int, int] = (96, 128)) -> Path:
    """A distinct small photo-like image (a gradient with a seeded blob) at ``path``."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = rng.integers(0, 256, 3, dtype=np.uint8)
    cv2.circle(image, (int(rng.integers(20, w - 20)), h // 2), 20, (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 3: two inputs never write the same output --------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["a/photo.jpg", "b/photo.jpg", "c/photo-2.jpg"],  # the case
        ["a/photo.jpg", "b/photo-2.jpg", "c/photo.jpg", "d/photo-2-2.png"],
        ["a/Photo.png", "b/photo.png", "c/PHOTO-2.png"],  # case-insensitive file systems
        ["a/photo.jpg", "a/photo.png", "a/photo.bmp"],  # differing only in the extension
        ["a/camera0.png", "b/camera0.jpg"],
    ],
)
def test_every_input_gets_its_own_output_names(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path, names: list[str]
) -> None:
    inputs = [_photo(tmp_path / n, seed) for seed, n in enumerate(names)]
    proc = run_cli("infer", *inputs, "-o", tmp_path / "out", "--model", infer_model.xml)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if " -> " in ln]
    assert len(lines) == len(inputs)
    written = [Path(p) for ln in lines for p in ln.split(" -> ", 1)[1].split(", ")]
    keys = [p.name.casefold() for p in written]
    assert len(set(keys)) == len(keys) == 2 * len(inputs), written
    # Each input's cut-out carries that input's own pixels: nothing was overwritten.
    for line in lines:
        source, outputs = line.split(" -> ", 1)
        rgba = next(Path(p) for p in outputs.split(", ") if p.endswith("_rgba.png"))
        cut = cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(source, cv2.IMREAD_COLOR)
        assert cut is not None and original is not None
        assert np.abs(cut[..., :3].astype(int) - original.astype(int)).max() <= 8, source


# --- 5: no command writes over its inputs or over a file of another kind -------------------------


def test_infer_never_writes_over_an_input_or_a_foreign_file(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    photo = _photo(ds / "photo.png", 1)
    # An input named like another input's result, in the output folder itself.
    victim = _photo(ds / "photo_alpha.png", 2)
    # A hard link to an input where a result would go.
    linked = _photo(tmp_path / "other.png", 3)
    os.link(linked, ds / "other_rgba.png")
    # A user's file that is not an image where a result would go.
    (ds / "notes_alpha.png").write_text("my notes\n")
    notes = _photo(tmp_path / "in" / "notes.png", 4)
    before = {p: _digest(p) for p in (victim, linked, ds / "notes_alpha.png")}
    proc = run_cli(
        "infer", photo, victim, linked, notes, "-o", ds, "--model", infer_model.xml
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert any("photo" in e and "which is an input file" in e for e in errors), errors
    assert any("other" in e and "which is an input file" in e for e in errors), errors
    assert any("notes" in e and "not an image output" in e for e in errors), errors
    assert {p: _digest(p) for p in before} == before
    assert (ds / "photo_alpha_alpha.png").is_file()  # the other inputs still ran


def test_infer_never_writes_over_the_model_or_the_background(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    """An input named so that its result would land on the model's .xml or the background."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    xml = model_dir / "net_alpha.png"  # an IR may be called anything
    xml.write_bytes(infer_model.xml.read_bytes())
    (model_dir / "net_alpha.bin").write_bytes(infer_model.xml.with_suffix(".bin").read_bytes())
    photo = _photo(tmp_path / "net.png", 5)
    before = _digest(xml)
    proc = run_cli("infer", photo, "-o", model_dir, "--model", xml)
    assert_one_line_error(proc, "which is an input file")
    assert _digest(xml) == before


def test_evaluate_json_never_replaces_a_matte_or_the_model(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    _photo(ds / "a.jpg", 1)
    matte = np.zeros((96, 128, 4), np.uint8)
    matte[..., 3] = 200
    cv2.imwrite(str(ds / "a.png"), matte)
    (tmp_path / "notes.txt").write_text("not a report\n")
    for dest, needle in [
        (ds / "a.png", "which is an input file"),
        (infer_model.xml, "which is an input file"),
        (infer_model.xml.with_suffix(".bin"), "which is an input file"),
        (infer_model.checkpoint, "not a json output"),
        (tmp_path / "notes.txt", "not a json output"),
        (ds, "is a folder"),
    ]:
        before = _digest(dest) if dest.is_file() else None
        proc = run_cli(
            "evaluate", "--images", ds, "--model", infer_model.xml, "--json", dest
        )  # fmt: skip
        _usage_error(proc, needle)
        assert (_digest(dest) if dest.is_file() else None) == before, dest
    ok = run_cli("evaluate", "--images", ds, "--model", infer_model.xml, "--json", ds / "r.json")
    assert ok.returncode == 0, ok.stderr
    again = run_cli("evaluate", "--images", ds, "--model", infer_model.xml, "--json", ds / "r.json")
    assert again.returncode == 0, again.stderr  # its own earlier report is replaced


def test_benchmark_and_quantize_json_never_replace_the_model(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    """Refused before any measurement: over the checkpoint, the ONNX, an IR's .xml or .bin."""
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(infer_model.checkpoint.read_bytes())
    targets = [ckpt, infer_model.onnx, infer_model.xml, infer_model.xml.with_suffix(".bin")]
    for dest in targets:
        before = _digest(dest)
        proc = run_cli(
            "benchmark", "-o", infer_model.root, "--checkpoint", ckpt, "--json", dest,
            "--rounds", "1", "--seconds", "0", "--video-frames", "0",
        )  # fmt: skip
        _usage_error(proc, "--json")
        assert _digest(dest) == before
        proc = run_cli("quantize", "-o", infer_model.root, "--json", dest)
        _usage_error(proc, "--json")
        assert _digest(dest) == before


def test_random_checkpoint_never_replaces_a_file_of_another_kind(
    run_cli: RunCli, tmp_path: Path
) -> None:
    photo = _photo(tmp_path / "photo.png", 1)
    before = _digest(photo)
    _usage_error(run_cli("random-checkpoint", photo), "not a checkpoint output")
    assert _digest(photo) == before
    _usage_error(run_cli("random-checkpoint", tmp_path), "is a folder")


# --- 13: an IR that is not a matting network --------------------------------------------------


def _save_ir(path: Path, build: str) -> Path:
    """A tiny IR built with OpenVINO's opset: ``classifier`` (1x3xHxW -> 1x1000), ``two-maps``
    (-> 1x2xHxW), ``nan`` (a matte of NaN), ``inf`` (a matte of +inf)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 64, 64], np.float32, name="input")
    mean = ops.reduce_mean(x, np.array([1], np.int64), keep_dims=True)  # 1x1xHxW
    if build == "classifier":
        flat = ops.reshape(x, np.array([1, -1], np.int64), special_zero=False)
        out = ops.matmul(flat, np.ones((3 * 64 * 64, 1000), np.float32), False, False)
    elif build == "two-maps":
        out = ops.concat([mean, mean], 1)
    else:
        bad = np.float32(np.nan if build == "nan" else np.inf)
        out = ops.multiply(mean, np.array(bad, np.float32))
    model = ov.Model([out], [x], build)
    ov.save_model(model, str(path))
    return path


@pytest.mark.parametrize("build", ["classifier", "two-maps"])
def test_an_ir_that_is_not_a_matting_network_is_refused_when_loaded(
    run_cli: RunCli, tmp_path: Path, build: str
) -> None:
    xml = _save_ir(tmp_path / f"{build}.xml", build)
    photo = _photo(tmp_path / "p.png", 1)
    proc = run_cli("infer", photo, "-o", tmp_path / "out", "--model", xml)
    assert_one_line_error(proc, "not a matting IR", "N x 1 x H x W")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("build", ["nan", "inf"])
def test_a_non_finite_matte_is_an_error_not_a_result(
    run_cli: RunCli, tmp_path: Path, build: str
) -> None:
    xml = _save_ir(tmp_path / f"{build}.xml", build)
    photos = [_photo(tmp_path / f"p{i}.png", i) for i in range(2)]
    proc = run_cli("infer", *photos, "-o", tmp_path / "out", "--model", xml)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert sum("non-finite" in e for e in errors) == 2, errors
    assert not list((tmp_path / "out").glob("*.png"))


# --- 16: the network's input size is bounded -------------------------------------------------


def test_keep_aspect_on_a_panorama_is_refused_alone(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    panorama = _photo(tmp_path / "pano.png", 1, size=(600, 50_000))
    normal = _photo(tmp_path / "normal.png", 2)
    proc = run_cli(
        "infer", panorama, normal, "-o", tmp_path / "out", "--model", infer_model.xml,
        "--resize", "keep-aspect",
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert any("pano.png" in e and "larger than" in e and "stretch" in e for e in errors), errors
    assert (tmp_path / "out" / "normal_alpha.png").is_file()
    assert not (tmp_path / "out" / "pano_alpha.png").exists()


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        ("1,3,4096,4096", "larger than"),
        ("1,3,32,16384", "larger than"),
        ("2,3,512,512", "batch 2 is not supported"),
        ("8,3,64,64", "batch 8 is not supported"),
    ],
)
def test_convert_refuses_a_huge_or_batched_input_shape_up_front(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path, shape: str, needle: str
) -> None:
    proc = run_cli(
        "convert", "--checkpoint", infer_model.checkpoint, "-o", tmp_path / "out",
        "--input-shape", shape,
    )  # fmt: skip
    _usage_error(proc, needle)
    assert not (tmp_path / "out").exists()


# --- 14: every count and size a user can pass is bounded ------------------------------------


def _numeric_options() -> list[tuple[str, str, type, Any]]:
    """(command, option, int or float, the option) for every numeric option of every command."""
    from toolkit.cli import app

    group: Any = typer.main.get_command(app)
    found = []
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            bare = param.bare_type()  # the annotation, as text ("int | None") or a type
            words = set(re.findall(r"\w+", bare if isinstance(bare, str) else repr(bare)))
            for kind in (int, float):
                if kind.__name__ in words and param.param_type_name == "option":
                    found.append((name, param.opts[0], kind, param))
    return found


def test_every_numeric_option_has_a_lower_and_an_upper_bound() -> None:
    """Ranges are declared on the options themselves (Click then refuses, exit 2, one line),
    and floats also refuse NaN and infinity. A new unbounded option fails here."""
    options = _numeric_options()
    assert len(options) >= 15  # the walk itself works
    unbounded = []
    for command, option, kind, param in options:
        if param.min is None or param.max is None:
            unbounded.append(f"{command} {option}")
        elif kind is float and param.callback is None:
            unbounded.append(f"{command} {option} (lets NaN through)")
    assert not unbounded, unbounded


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["convert", "--model-name", ".", "--checkpoint", "x.ckpt"], "--model-name"),
        (["convert", "--model-name", "..", "--checkpoint", "x.ckpt"], "--model-name"),
        (["convert", "--model-name", "x" * 5000, "--checkpoint", "x.ckpt"], "--model-name"),
        (["convert", "--model-name", "a\nb", "--checkpoint", "x.ckpt"], "--model-name"),
        (["download", "--num-attempts", "1100"], "--num-attempts"),
        (["download", "--jobs", "100000"], "--jobs"),
        (["download", "--connect-timeout", "nan"], "--connect-timeout"),
        (["download", "--read-timeout", "inf"], "--read-timeout"),
        (["download", "--list", "/dev/zero"], "1024 KiB"),
        (["download", "--list", "/dev/urandom"], "1024 KiB"),
        (["infer", "x.png", "--jobs", "1000"], "--jobs"),
        (["infer", "x.png", "--max-frames", "99999999999999999999"], "--max-frames"),
        (["infer", "x.png", "--max-pixels", "99999999999999"], "--max-pixels"),
        (["infer", "x.png", "--ofd-tolerance", "nan"], "--ofd-tolerance"),
        (["evaluate", "--images", ".", "--limit", "99999999999999999999"], "--limit"),
        (["benchmark", "--rounds", "100000"], "--rounds"),
        (["benchmark", "--seconds", "nan"], "--seconds"),
        (["quantize", "--subset-size", "10000000"], "--subset-size"),
        (["random-checkpoint", "x.ckpt", "--seed", "99999999999999999999"], "--seed"),
    ],
)
def test_out_of_range_counts_are_one_usage_line(
    run_cli: RunCli, tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run_cli(*args, timeout=60)
    _usage_error(proc, needle)
    assert not (tmp_path / "x.ckpt").exists()


# --- 6: download keeps a user's non-matching file ----------------------------------------------


def _dl(
    run_cli: RunCli, model: ModelSpec, out: Path, server: FileServer, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "download", "--name", model.name, "--models-dir", model.models_dir, "-o", out, *extra,
        env=fast_env(server),
    )  # fmt: skip


def test_download_keeps_a_non_matching_file_until_a_verified_replacement_exists(
    http_server: FileServer,
    served_model,
    run_cli: RunCli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    model = served_model()
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    mine = b"my own fine-tuned weights " * 100
    for extra in ([], ["--offline"], ["--force", "--offline"]):  # nothing can replace it
        final.write_bytes(mine)
        proc = _dl(run_cli, model, tmp_path / "o", http_server, "--offline", *extra)
        assert_one_line_error(proc, "left in place")
        assert final.read_bytes() == mine
    proc = _dl(run_cli, model, tmp_path / "o", http_server)  # a verified replacement exists
    assert proc.returncode == 0, proc.stderr
    assert final.read_bytes() == model.data
    kept = list(final.parent.glob(final.name + ".mismatch-*"))
    assert [k.read_bytes() for k in kept] == [mine]
    assert str(kept[0]) in proc.stdout + proc.stderr  # it says where


def test_download_force_with_every_source_failing_keeps_the_file(
    http_server: FileServer,
    served_model,
    run_cli: RunCli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    model = served_model(Fault("status", times=-1, status=500))
    final = model.path_in(tmp_path / "o")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"mine")
    proc = _dl(run_cli, model, tmp_path / "o", http_server, "--force", "--num-attempts", "1")
    assert proc.returncode == 1
    assert final.read_bytes() == b"mine"


def test_download_from_the_cache_keeps_a_non_matching_file_too(
    http_server: FileServer,
    served_model,
    run_cli: RunCli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    model = served_model()
    cache = tmp_path / "cache"
    assert _dl(run_cli, model, tmp_path / "a", http_server, "--cache-dir", cache).returncode == 0
    final = model.path_in(tmp_path / "b")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"\x00" * (len(model.data) + 5))
    proc = _dl(run_cli, model, tmp_path / "b", http_server, "--cache-dir", cache, "--offline")
    assert proc.returncode == 0, proc.stderr
    assert final.read_bytes() == model.data
    kept = list(final.parent.glob(final.name + ".mismatch-*"))
    assert [k.read_bytes() for k in kept] == [b"\x00" * (len(model.data) + 5)]


def test_download_never_writes_over_its_own_config_or_list(
    http_server: FileServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """``-o`` chosen so that a model file's path is the model.yml itself, or the --list file."""
    from tests.download.fixtures_http import FileSpec, payload, write_model

    data = payload(1000, 3)
    url = http_server.add("/files/m1.yml", data)
    folder = tmp_path / "o" / "public" / "m1"
    write_model(folder, "m1", [(FileSpec("m1.yml", data), [url])])
    config = folder / "m1.yml"
    before = _digest(config)
    proc = run_cli(
        "download", "--name", "m1", "--models-dir", folder, "-o", tmp_path / "o",
        env=fast_env(http_server),
    )  # fmt: skip
    _usage_error(proc, "an input of this command")
    assert _digest(config) == before and http_server.log == []
    url2 = http_server.add("/files/list.txt", data)
    write_model(tmp_path / "models", "m2", [(FileSpec("list.txt", data), [url2])])
    listed = tmp_path / "p" / "public" / "m2" / "list.txt"
    listed.parent.mkdir(parents=True)
    listed.write_text("m2\n")
    proc = run_cli(
        "download", "--list", listed, "--models-dir", tmp_path / "models", "-o", tmp_path / "p",
        env=fast_env(http_server),
    )  # fmt: skip
    _usage_error(proc, "an input of this command")
    assert listed.read_text() == "m2\n"


def test_json_reports_stay_json(tmp_path: Path) -> None:
    """The kind sniffing behind every --json: a report replaces a report, nothing else."""
    from toolkit.errors import UsageError
    from toolkit.fsutil import check_output

    report = tmp_path / "r.json"
    report.write_text(json.dumps({"a": 1}))
    check_output(report, "json")
    (tmp_path / "empty").write_bytes(b"")
    check_output(tmp_path / "empty", "json")
    for name, data in [("p.json", b"\x89PNG\r\n\x1a\n...."), ("x.json", b"<?xml?><net>")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError):
            check_output(tmp_path / name, "json")
    link = tmp_path / "link.json"
    link.symlink_to(report)
    with pytest.raises(UsageError, match="input file"):
        check_output(link, "json", inputs=[report])


# --- 8: verification never fails a correct IR on an image a user may pass --------------------


def _verification_images(photo: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    red = np.zeros((300, 400, 3), np.uint8)
    red[..., 2] = 255
    half = np.zeros((512, 512, 3), np.uint8)
    half[:, 256:] = 255
    return {
        "black": np.zeros((512, 512, 3), np.uint8),
        "white": np.full((512, 512, 3), 255, np.uint8),
        "grey 127": np.full((480, 640, 3), 127, np.uint8),
        "grey 128": np.full((512, 512, 3), 128, np.uint8),
        "red": red,
        "half black, half white": half,
        "1x1 pixel": photo[200:201, 200:201].copy(),
        "8x8 thumbnail": cv2.resize(photo, (8, 8), interpolation=cv2.INTER_AREA),
        "uniform noise": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "a 3000x40 strip": cv2.resize(photo, (3000, 40)),
    }


@pytest.mark.parametrize("which", ["tame", pytest.param("touchy", marks=pytest.mark.slow)])
def test_a_correct_ir_passes_verification_on_any_image(
    which: str,
    converted_tame,
    converted_touchy,
    photo_bgr: np.ndarray,  # type: ignore[no-untyped-def]
) -> None:
    from toolkit.convert.verify import verify_ir

    converted = converted_tame if which == "tame" else converted_touchy
    for name, image in _verification_images(photo_bgr).items():
        report = verify_ir(converted.checkpoint, converted.fp32, image, onnx_path=converted.onnx)
        assert report.passed, (name, report.failures())


@pytest.mark.slow
def test_a_wrong_ir_still_fails_verification_on_the_photo(
    converted_tame,
    photo_bgr: np.ndarray,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The wider tolerance still catches the mistakes it is there for: the mean forgotten
    fails on every image (flat ones included), the channel reversal on any coloured one."""
    from toolkit.convert.mo_args import DEFAULT_MO_ARGS, parse_mo_args
    from toolkit.convert.pipeline import Recipe, convert_onnx, recipe_mo_args
    from toolkit.convert.verify import verify_ir
    from toolkit.hashing import file_digest

    images = _verification_images(photo_bgr)
    for flag, names in [
        ("--mean_values", ["black", "white", "grey 128", "red", "uniform noise"]),
        ("--reverse_input_channels", ["red", "uniform noise"]),
    ]:
        mo = parse_mo_args([a for a in DEFAULT_MO_ARGS if not a.startswith(flag)])
        recipe = Recipe(file_digest(converted_tame.checkpoint), mo_args=recipe_mo_args(mo))
        wrong = convert_onnx(
            converted_tame.onnx, tmp_path / flag / "FP32" / "w.xml", precision="FP32", mo=mo,
            recipe=recipe,
        )  # fmt: skip
        for name in ["photo", *names]:
            image = photo_bgr if name == "photo" else images[name]
            assert not verify_ir(converted_tame.checkpoint, wrong, image).passed, (flag, name)


# --- 7: options validated before any work; --force keeps earlier outputs until verified ------


def _tree_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture
def converted_tree(converted_tame, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A copy of a good conversion (ONNX + FP32 + FP16 IR) as `convert -o` laid it out."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(converted_tame.root, out)
    return out


def test_convert_force_refuses_bad_options_before_any_work(
    run_cli: RunCli,
    converted_tame,
    converted_tree: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    before = _tree_digests(converted_tree)
    ckpt = converted_tame.checkpoint
    onnx = next(converted_tree.rglob("*.onnx"))
    xml = next(converted_tree.rglob("FP32/*.xml"))
    notes = tmp_path / "notes.txt"
    notes.write_text("text\n")
    for args, needle in [
        (["--verify-image", tmp_path / "missing.png"], "--verify-image"),
        (["--verify-image", notes], "cannot read it as an image"),
        (["--verify-image", tmp_path], "--verify-image"),
        (["--verify-image", onnx], "input file"),  # an input that is also an output
        (["--input-shape", "2,3,512,512"], "batch 2"),
        (["--model-name", "."], "--model-name"),
        (["--exporter", "magic"], "legacy or dynamo"),
    ]:
        proc = run_cli("convert", "--checkpoint", ckpt, "-o", converted_tree, "--force", *args)
        _usage_error(proc, needle)
        assert "Converting" not in proc.stdout, args  # no export was started
        assert _tree_digests(converted_tree) == before, args
    # A checkpoint that is one of the outputs: refused too (it would be overwritten).
    proc = run_cli("convert", "--checkpoint", xml, "-o", converted_tree, "--force")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert _tree_digests(converted_tree) == before


@pytest.mark.slow
def test_convert_force_on_a_flat_image_passes_and_a_failed_run_keeps_earlier_outputs(
    run_cli: RunCli,
    converted_tame,
    converted_tree: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The issue's case (--verify-image grey 128) passes now; a run whose verification does
    fail (a wrong mean, on purpose) or is interrupted leaves the earlier outputs in place."""
    import shutil

    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((300, 400, 3), 128, np.uint8))
    ckpt = converted_tame.checkpoint
    # A model whose config forgets the mean: its conversion fails verification. Its folder
    # holds a good earlier conversion (the webcam one under this model's names).
    config = (REPO / "model_configs" / f"{WEBCAM}.yml").read_text(encoding="utf-8")
    models = tmp_path / "models"
    models.mkdir()
    (models / "bent-model.yml").write_text(
        config.replace("--mean_values=input[127.5, 127.5, 127.5]", "--mean_values=input[0,0,0]")
    )
    good = converted_tree / "public" / WEBCAM
    bent = converted_tree / "public" / "bent-model"
    (bent / "FP32").mkdir(parents=True)
    shutil.copy(good / "modnet_webcam_portrait_matting.onnx", bent / "bent_model.onnx")
    for ext in (".xml", ".bin"):
        shutil.copy(good / "FP32" / f"{WEBCAM}{ext}", bent / "FP32" / f"bent-model{ext}")
    before = _tree_digests(converted_tree)
    wrong = run_cli(
        "convert", "--models-dir", models, "--name", "bent-model", "--checkpoint", ckpt,
        "-o", converted_tree, "--force", "--precision", "FP32",
    )  # fmt: skip
    assert_one_line_error(wrong, "differs from PyTorch")
    assert _tree_digests(converted_tree) == before
    assert not list(converted_tree.rglob(".staging.*"))
    ok = run_cli(
        "convert", "--checkpoint", ckpt, "-o", converted_tree, "--force", "--precision", "FP32",
        "--verify-image", grey,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    assert "wrote " in ok.stdout  # replaced, once verified
