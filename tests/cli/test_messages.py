"""Messages that keep the cause, and first contact with the CLI (issue 11, items 15 and 20):
OpenVINO's reason instead of its source location, the right word for the wrong file, options
named as the user typed them, credentials never echoed, long names, where a missing model was
looked for, and help text without Typer's internals."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.matting.fixtures import InferModel
from toolkit.errors import one_line, redact
from toolkit.fsutil import atomic_write_bytes


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def _copy_ir(model: InferModel, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    xml = dest / "m.xml"
    shutil.copy(model.xml, xml)
    shutil.copy(model.xml.with_suffix(".bin"), xml.with_suffix(".bin"))
    return xml


# --- item 15: the cause, in one line ------------------------------------------------------------


def test_openvino_errors_keep_their_reason(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    xml = _copy_ir(infer_model, tmp_path / "ir")
    data = xml.with_suffix(".bin").read_bytes()
    xml.with_suffix(".bin").write_bytes(data[: len(data) // 3])
    shutil.copy(sample_photo, tmp_path / "a.jpg")  # a dataset for evaluate: one pair
    shutil.copy(sample_photo, tmp_path / "a.png")
    for command in (
        ["infer", "-m", xml, sample_photo],
        ["evaluate", "--images", tmp_path, "--model", xml],
    ):
        proc = run_cli(*command)
        assert proc.returncode == 1, proc.stderr
        (line,) = _errors(proc.stderr)
        assert "Incorrect weights in bin file" in line, line
        assert "core.cpp" not in line and "Exception from" not in line


def test_one_line_drops_openvino_locations_and_keeps_every_reason() -> None:
    raw = (
        "Exception from src/inference/src/cpp/core.cpp:117:\n"
        "Exception from src/inference/src/dev/plugin.cpp:54:\n"
        "Check 'x' failed at src/core/src/node.cpp:12:\n"
        "Cannot compile: unsupported layer Foo\n\n"
    )
    assert one_line(RuntimeError(raw)) == "Cannot compile: unsupported layer Foo"
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line("a\nb\n", limit=100) == "a b"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("modnet.onnx", "an ONNX model, not an OpenVINO IR"),
        ("modnet.ckpt", "a PyTorch checkpoint, not an OpenVINO IR"),
        ("photo.png", "not an OpenVINO IR"),
    ],
)
def test_model_that_is_not_an_ir_is_named_for_what_it_is(
    run_cli: RunCli,
    infer_model: InferModel,
    sample_photo: Path,
    tmp_path: Path,
    name: str,
    expected: str,
) -> None:
    source = {
        "modnet.onnx": infer_model.onnx,
        "modnet.ckpt": infer_model.checkpoint,
        "photo.png": sample_photo,
    }[name]
    wrong = tmp_path / name
    shutil.copy(source, wrong)
    proc = run_cli("infer", "-m", wrong, sample_photo)
    assert proc.returncode == 1
    (line,) = _errors(proc.stderr)
    assert expected in line and ".bin is missing" not in line, line


def test_a_torchscript_archive_is_called_what_it_is(run_cli: RunCli, tmp_path: Path) -> None:
    import torch

    archive = tmp_path / "modnet.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 1, 1)), str(archive))
    for command in (
        ["check-checkpoint", archive],
        ["convert", "--checkpoint", archive, "-o", tmp_path / "o"],
    ):
        proc = run_cli(*command)
        assert proc.returncode == 1, proc.stderr
        (line,) = _errors(proc.stderr)
        assert "a TorchScript archive (torch.jit.save)" in line, line
        assert "corrupt" not in line


def test_precision_is_case_insensitive_or_named(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    ok = run_cli(
        "infer",
        "--model-root",
        infer_model.root,
        "--precision",
        "fp32",
        sample_photo,
        "-o",
        tmp_path / "o",
    )
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("infer", "--model-root", infer_model.root, "--precision", "fp64", sample_photo)
    assert bad.returncode == 2 and _errors(bad.stderr) == [
        "error: --precision 'fp64': not a precision; use one of FP16, FP16-INT1, FP16-INT8, "
        "FP32, FP32-INT1, FP32-INT8"
    ]


def test_quantize_names_the_option_that_was_wrong(
    run_cli: RunCli, infer_model: InferModel, tmp_path: Path
) -> None:
    proc = run_cli("quantize", "-o", infer_model.root, "--holdout", tmp_path / "bad")
    assert proc.returncode == 1
    assert _errors(proc.stderr) == [f"error: --holdout {tmp_path / 'bad'}: no such folder"]


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:s3cr3t@127.0.0.1:{port}/m",
        "https://tok3n-s3cr3t@127.0.0.1:{port}/m",
        "http://127.0.0.1:{port}/m?token=s3cr3t&x=1",
        "http://127.0.0.1:{port}/m?X-Amz-Signature=s3cr3t",
        "http://127.0.0.1:{port}/m?sv=1&sig=s3cr3t",
    ],
)
def test_credentials_in_urls_are_never_printed(
    run_cli: RunCli, served_model, tmp_path: Path, url: str
) -> None:  # type: ignore[no-untyped-def]
    from tests.download.fixtures_http import fast_env, free_port

    model = served_model()
    mirror = url.format(port=free_port())  # nothing listens there: every attempt fails
    for fmt in ("text", "json"):
        proc = run_cli(
            "download", "--name", model.name, "--models-dir", model.models_dir, "-o",
            tmp_path / "o", "--mirror", mirror, "--offline", "--num-attempts", "1",
            "--progress-format", fmt, env=fast_env(),
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "s3cr3t" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "***" in proc.stdout + proc.stderr
    assert redact("see http://a:b@h/x?token=t&ok=1#y") == "see http://***@h/x?token=***&ok=1#y"


def test_a_cache_dir_that_is_a_file_is_a_warning_not_a_failure(
    run_cli: RunCli, served_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.download.fixtures_http import fast_env

    model = served_model()
    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("mine")
    proc = run_cli(
        "download", "--name", model.name, "--models-dir", model.models_dir, "-o", tmp_path / "o",
        "--cache-dir", not_a_folder, env=fast_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (
        f"warning: --cache-dir {not_a_folder} is not a folder; downloading without the cache"
    )
    assert model.path_in(tmp_path / "o").read_bytes() == model.data
    assert not_a_folder.read_text() == "mine"


def test_a_long_name_is_written_when_the_final_name_fits(
    run_cli: RunCli, infer_model: InferModel, sample_photo: Path, tmp_path: Path
) -> None:
    """A 240-character stem: `<stem>_composite.jpg` (254 bytes) fits in NAME_MAX, and so must
    the temporary file it is written through."""
    stem = "p" * 240
    photo = tmp_path / f"{stem}.jpg"
    shutil.copy(sample_photo, photo)
    proc = run_cli("infer", "-m", infer_model.xml, photo, "-b", "green", "-o", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / f"{stem}_composite.jpg").is_file()
    for size in (250, 255):  # the library helper, right up to the limit
        dest = tmp_path / "lib" / ("é" * ((size - 4) // 2) + ".bin")
        atomic_write_bytes(dest, b"x")
        assert dest.read_bytes() == b"x"
    assert not [p for p in (tmp_path / "lib").iterdir() if p.name.startswith(".")]


# --- item 20: first contact ---------------------------------------------------------------------


def test_a_missing_model_says_where_it_looked_and_how_to_point_at_one(
    run_cli: RunCli, sample_photo: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "some" / "folder"
    elsewhere.mkdir(parents=True)
    proc = run_cli("infer", sample_photo, cwd=elsewhere)
    assert proc.returncode == 1
    (line,) = _errors(proc.stderr)
    looked = elsewhere / "cache" / "public" / "modnet-webcam-portrait-matting"
    assert str(looked / "FP32" / "modnet-webcam-portrait-matting.xml") in line
    for hint in ("--model", "--model-root", "$MODNET_TOOLS_HOME", str(elsewhere)):
        assert hint in line, (hint, line)
    home = run_cli("infer", sample_photo, cwd=elsewhere, env={"MODNET_TOOLS_HOME": str(tmp_path)})
    assert "($MODNET_TOOLS_HOME)" in home.stderr and str(tmp_path / "public") in home.stderr
    for command in (["evaluate", "--images", tmp_path], ["quantize"], ["benchmark"]):
        other = run_cli(*command, cwd=elsewhere)
        assert other.returncode == 1
        assert str(looked) in other.stderr and "-o" in other.stderr, other.stderr


def test_session_from_name_says_where_it_looked(tmp_path: Path) -> None:
    from toolkit.matting.session import MattingSession, ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match=re.escape(str(tmp_path / "public"))):
        MattingSession.from_name(root=tmp_path)


def test_help_is_plain_and_in_workflow_order(run_cli: RunCli) -> None:
    from typer.testing import CliRunner

    from toolkit.cli import app

    top = run_cli("--help")
    assert top.returncode == 0
    assert "<bool>" not in top.stdout
    listed = re.findall(r"^│ ([a-z][a-z-]+)\s{2,}", top.stdout, re.M)
    order = [
        c
        for c in listed
        if c in {"download", "convert", "infer", "evaluate", "quantize", "benchmark"}
    ]
    assert order == ["download", "convert", "infer", "evaluate", "quantize", "benchmark"], listed
    assert listed.index("benchmark") < listed.index("random-checkpoint")
    runner = CliRunner()
    for command in listed:
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        usage = next(ln for ln in text.splitlines() if "Usage:" in ln)
        assert "{" not in usage and "}" not in usage, usage
        assert "<bool>" not in text, command
