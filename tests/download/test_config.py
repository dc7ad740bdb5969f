"""The model.yml schema and model selection: the shipped configs hold OMZ's exact files, and
a bad config is refused with a message naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.download.config import (
    DEFAULT_MODEL,
    GoogleDriveSource,
    HttpSource,
    discover,
    load_config,
    parse_precisions,
    select,
)
from toolkit.errors import ConfigError, UsageError

COMMIT = "2938675e4b5c60ab5f5d7a2b2191c68256f99d70"
RAW = f"https://raw.githubusercontent.com/ZHKKKe/MODNet/{COMMIT}"
OMZ_STORAGE = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/public/2022.2"
PY_FILES = [
    ("modnet_onnx.py", 9516, "37326740f2756572c639bb8089c70cfee6994f358fb185fe5f1c1f40c061a5d73f62319a8c2aa48d367778360751385e", f"{RAW}/onnx/modnet_onnx.py"),
    ("src/models/backbones/__init__.py", 277, "cdb28b27092889a8293e189e80351087d0cd3135d3f0b56a4a4fd5ae28251bd0142e027d209cf63a24f6b6042255b384", f"{RAW}/src/models/backbones/__init__.py"),
    ("src/models/backbones/mobilenetv2.py", 5588, "c100361a1b06a3751fd5b7720cb4a882153d62362421e51ef8ecccadf75acdcbd40376477739ac35f404a76388b01121", f"{RAW}/src/models/backbones/mobilenetv2.py"),
    ("src/models/backbones/wrapper.py", 2610, "c627e513d6aca544c60fc7875c159e36563542c7d9a746e5b79c1a650118b6c8920561587061979d78993f12be906bbc", f"{RAW}/src/models/backbones/wrapper.py"),
]  # fmt: skip
CHECKPOINTS = {
    "modnet-webcam-portrait-matting": (
        "fab9c2ee2995642e21656a3180e75c9a73d3442a2500e5f0e0a08e14bfe9c4640fccf7c055162ff039f4dd066102652c",
        "1Nf1ZxeJZJL8Qx9KadcYYyEmmlKhTADxX",
    ),
    "modnet-photographic-portrait-matting": (
        "14fb9db68be32bbef0acd42d8925cf4750d2188c1bdd86399442a67f20f4a6f827f9ed1a56a3dc20258baaa004af9980",
        "1mcr7ALciuAsHCpLnrtG_eop5-EYhbCmz",
    ),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_shipped_config_has_omz_files_and_our_alternatives(name: str) -> None:
    config = discover()[name]
    underscored = name.replace("-", "_")
    files = {f.name: f for f in config.files}
    assert list(files) == [p[0] for p in PY_FILES] + [f"{underscored}.ckpt"]
    for file_name, size, checksum, url in PY_FILES:
        entry = files[file_name]
        assert (entry.size, entry.checksum) == (size, checksum)
        assert entry.source == HttpSource.model_validate({"$type": "http", "url": url})
    ckpt = config.checkpoint_file
    checksum, drive_id = CHECKPOINTS[name]
    assert (ckpt.name, ckpt.size, ckpt.checksum) == (f"{underscored}.ckpt", 26255603, checksum)
    assert [s.model_dump(by_alias=True) for s in ckpt.sources] == [
        {"$type": "http", "url": f"{OMZ_STORAGE}/{name}/{underscored}.ckpt"},
        {"$type": "google_drive", "id": drive_id},
        {
            "$type": "http",
            "url": "https://huggingface.co/DavG25/modnet-pretrained-models/resolve/main/"
            f"models/{underscored}.ckpt",
        },
    ]
    assert isinstance(ckpt.original_source, GoogleDriveSource)
    assert config.precisions == ["FP16", "FP32"]
    assert config.onnx_file_name == f"{underscored}.onnx"
    assert config.subdirectory == f"public/{name}"
    assert [i.model_dump() for i in config.input_info] == [
        {"name": "input", "shape": [1, 3, 512, 512], "layout": "NCHW"}
    ]


def _write(tmp_path: Path, text: str, name: str = "m.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """\
description: d
task_type: background_matting
framework: pytorch
license: https://example.invalid/LICENSE
files:
  - name: w.ckpt
    size: 10
    checksum: {checksum}
    source: {source}
"""
SHA = "a" * 96


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.format(checksum="abc", source="https://x.invalid/w"), "files.0.checksum"),
        (GOOD.format(checksum=SHA, source="ftp://x.invalid/w"), "files.0.source"),
        (GOOD.format(checksum=SHA, source="{$type: google_drive, id: '?'}"), "files.0.source"),
        (GOOD.format(checksum=SHA, source="https://x/w").replace("size: 10", "size: -1"), "files.0.size"),
        (GOOD.format(checksum=SHA, source="https://x/w").replace("size: 10", "size: '10'"), "files.0.size"),
        (GOOD.format(checksum=SHA, source="https://x/w").replace("w.ckpt", "/etc/passwd"), "files.0.name"),
        (GOOD.format(checksum=SHA, source="https://x/w").replace("w.ckpt", "a/../../b"), "files.0.name"),
        (GOOD.format(checksum=SHA, source="https://x/w") + "colour: red\n", "colour"),
        (GOOD.format(checksum=SHA, source="https://x/w").replace("framework: pytorch\n", ""), "framework"),
    ],
)  # fmt: skip
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: field '{field}"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [("files: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping")],
)
def test_unparseable_config(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_alternative_sources_accept_strings_and_drive(tmp_path: Path) -> None:
    text = GOOD.format(checksum=SHA.upper(), source="https://x.invalid/w") + (
        "    alternative_sources:\n"
        "      - https://mirror.invalid/w\n"
        "      - {$type: google_drive, id: 1Nf1ZxeJZJL8Qx9KadcYYyEmmlKhTADxX}\n"
    )
    config = load_config(_write(tmp_path, text))
    f = config.files[0]
    assert f.checksum == SHA  # normalised to lower case
    assert [type(s).__name__ for s in f.sources] == [
        "HttpSource",
        "HttpSource",
        "GoogleDriveSource",
    ]


def test_models_dir_layouts_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    flat.mkdir()
    (nested / "folder-model").mkdir(parents=True)
    _write(flat, GOOD.format(checksum=SHA, source="https://x/w"), "flat-model.yml")
    _write(nested / "folder-model", GOOD.format(checksum=SHA, source="https://x/w"), "model.yml")
    # A later folder's config replaces a shipped one of the same name.
    _write(flat, GOOD.format(checksum=SHA, source="https://override/w"), f"{DEFAULT_MODEL}.yml")
    monkeypatch.setenv("MODNET_TOOLS_MODELS_DIR", str(nested))
    models = discover([flat])
    assert {"flat-model", "folder-model", DEFAULT_MODEL} <= set(models)
    assert models["folder-model"].path == nested / "folder-model" / "model.yml"
    assert models[DEFAULT_MODEL].files[0].source == HttpSource.model_validate(
        {"$type": "http", "url": "https://override/w"}
    )


def test_missing_models_dir_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_select_like_omz(tmp_path: Path) -> None:
    models = discover()
    assert [m.name for m in select(models)] == [DEFAULT_MODEL]
    assert [m.name for m in select(models, names="modnet-p*")] == [
        "modnet-photographic-portrait-matting"
    ]
    both = select(models, names="modnet-webcam-portrait-matting, modnet-*")
    assert [m.name for m in both] == [
        "modnet-webcam-portrait-matting",
        "modnet-photographic-portrait-matting",
    ]
    assert len(select(models, all_models=True)) == len(models)
    listing = _write(tmp_path, "# comment\nmodnet-webcam-*  # trailing\n\n", "list.txt")
    assert [m.name for m in select(models, list_file=listing)] == [DEFAULT_MODEL]
    with pytest.raises(ConfigError, match='No matching models: "MODNET-\\*"'):
        select(models, names="MODNET-*")  # case-sensitive, as in OMZ
    with pytest.raises(UsageError, match="only one of"):
        select(models, names="x", all_models=True)


def test_parse_precisions() -> None:
    assert parse_precisions("FP16, FP32") == {"FP16", "FP32"}
    assert "FP16-INT8" in parse_precisions(None)
    with pytest.raises(ConfigError, match=r"Unknown precisions specified: FP8, INT4\."):
        parse_precisions("FP16,INT4,FP8")
