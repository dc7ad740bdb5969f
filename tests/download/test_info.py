"""``modnet-tools info``: omz_info_dumper's JSON, field for field."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, RunCli
from tests.download.fixtures_http import FileSpec, write_model
from tests.helpers import assert_one_line_error

OMZ_FIELDS = [
    "name",
    "composite_model_name",
    "description",
    "framework",
    "license_url",
    "accuracy_config",
    "model_config",
    "precisions",
    "subdirectory",
    "task_type",
    "input_info",
    "model_stages",
]


def test_info_has_every_omz_info_dumper_field(run_cli: RunCli) -> None:
    proc = run_cli("info", "--name", "modnet-webcam-portrait-matting")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[\n    {\n")  # indent 4, as omz_info_dumper prints
    [model] = json.loads(proc.stdout)
    assert list(model) == OMZ_FIELDS
    assert model["name"] == "modnet-webcam-portrait-matting"
    assert model["composite_model_name"] is None
    assert model["description"].startswith('The "modnet-webcam-portrait-matting" model')
    assert model["framework"] == "pytorch"
    assert model["license_url"] == "https://raw.githubusercontent.com/ZHKKKe/MODNet/master/LICENSE"
    assert model["accuracy_config"] is None
    assert Path(model["model_config"]).resolve() == (
        REPO / "model_configs" / "modnet-webcam-portrait-matting.yml"
    )
    assert model["precisions"] == ["FP16", "FP32"]
    assert model["subdirectory"] == "public/modnet-webcam-portrait-matting"
    assert model["task_type"] == "background_matting"
    assert model["input_info"] == [{"name": "input", "shape": [1, 3, 512, 512], "layout": "NCHW"}]
    assert model["model_stages"] == []


def test_info_all_and_default(run_cli: RunCli) -> None:
    every = json.loads(run_cli("info", "--all").stdout)
    assert [m["name"] for m in every] == [
        "modnet-photographic-portrait-matting",
        "modnet-webcam-portrait-matting",
    ]
    default = json.loads(run_cli("info").stdout)
    assert [m["name"] for m in default] == ["modnet-webcam-portrait-matting"]


def test_info_print_all_and_no_match(run_cli: RunCli) -> None:
    listed = run_cli("info", "--print-all")
    assert listed.returncode == 0 and "modnet-photographic-portrait-matting" in listed.stdout
    assert_one_line_error(run_cli("info", "--name", "nope"), 'No matching models: "nope"')


def test_info_for_a_models_dir_config_with_accuracy_check(run_cli: RunCli, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "my-model"
    write_model(folder, "tmp", [(FileSpec("w.ckpt", b"w"), ["https://x.invalid/w"])])
    (folder / "tmp.yml").rename(folder / "model.yml")
    (folder / "accuracy-check.yml").write_text("models: []\n")
    proc = run_cli("info", "--name", "my-model", "--models-dir", tmp_path / "models")
    assert proc.returncode == 0, proc.stderr
    [model] = json.loads(proc.stdout)
    assert model["model_config"] == str(folder / "model.yml")
    assert model["accuracy_config"] == str(folder / "accuracy-check.yml")
    assert model["subdirectory"] == "public/my-model"
