"""Model configs in Open Model Zoo's model.yml format: schema, discovery, selection, templates.

A config is data from disk (possibly from a user's ``--models-dir``), so it is validated
strictly: wrong types, unknown fields, malformed checksums and file names that would escape
the output folder are refused with a message naming the file and the field.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from toolkit.errors import ConfigError, ToolkitError, UsageError

DEFAULT_MODEL = "modnet-webcam-portrait-matting"
KNOWN_PRECISIONS = frozenset({"FP16", "FP16-INT1", "FP16-INT8", "FP32", "FP32-INT1", "FP32-INT8"})
MODELS_DIR_ENV = "MODNET_TOOLS_MODELS_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GoogleDriveSource(_Strict):
    """A file on Google Drive, fetched through its confirmation page."""

    type: Literal["google_drive"] = Field(alias="$type")
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{10,}$")]


class HttpSource(_Strict):
    """A plain URL (a bare string in the YAML is the same thing)."""

    type: Literal["http"] = Field(alias="$type")
    url: str

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        return _check_url(value)


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"source URL must start with http:// or https://, got {value!r}")
    return value


# Tagged by ``$type`` so that a bad source is reported against its own kind's fields.
Source = Annotated[HttpSource | GoogleDriveSource, Field(discriminator="type")]


def _coerce_source(value: Any) -> Any:
    if isinstance(value, str):
        return {"$type": "http", "url": value}
    return value


class ModelFile(_Strict):
    """One file of a model: where it goes, how big it is, its sha384, where to get it."""

    name: str
    size: StrictInt = Field(gt=0)
    checksum: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{96}$")]
    source: Source
    alternative_sources: list[Source] = Field(default_factory=list)
    # Informational in OMZ (and misspelt there as ``oroginal_source``); never fetched as such.
    original_source: Source | None = None
    oroginal_source: Source | None = None

    @field_validator("source", "original_source", "oroginal_source", mode="before")
    @classmethod
    def _str_source(cls, value: Any) -> Any:
        return _coerce_source(value)

    @field_validator("alternative_sources", mode="before")
    @classmethod
    def _str_sources(cls, value: Any) -> Any:
        return [_coerce_source(v) for v in value] if isinstance(value, list) else value

    @field_validator("name")
    @classmethod
    def _confined(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if (
            not value
            or "\\" in value
            or "\x00" in value
            or pure.is_absolute()
            or any(part in ("..", ".", "") for part in value.split("/"))
            or ":" in pure.parts[0]
        ):
            raise ValueError(f"file name {value!r} must be a relative path inside the model folder")
        return value

    @field_validator("checksum")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @property
    def sources(self) -> list[Source]:
        """Every place to fetch the file from, in the order to try them."""
        return [self.source, *self.alternative_sources]


class InputInfo(_Strict):
    name: str
    shape: list[StrictInt]
    layout: str


class ModelConfig(_Strict):
    """A validated model.yml. ``name`` and ``path`` come from where the file was found."""

    name: str
    path: Path
    description: str
    task_type: str
    framework: str
    license: str
    files: list[ModelFile] = Field(min_length=1)
    conversion_to_onnx_args: list[str] = Field(default_factory=list)
    input_info: list[InputInfo] = Field(default_factory=list)
    model_optimizer_args: list[str] = Field(default_factory=list)
    quantization_output_precisions: list[str] = Field(default_factory=list)
    accuracy_config: str | None = None
    postprocessing: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"model name {value!r} may hold only letters, digits, '.', '_', '-'")
        return value

    @field_validator("files")
    @classmethod
    def _unique_files(cls, files: list[ModelFile]) -> list[ModelFile]:
        seen: set[str] = set()
        for f in files:
            if f.name in seen:
                raise ValueError(f"file {f.name!r} is listed twice")
            seen.add(f.name)
        return files

    @cached_property
    def precisions(self) -> list[str]:
        """What omz_converter would make: FP16 and FP32 for a model with MO arguments."""
        precs = {"FP16", "FP32"} if self.model_optimizer_args else set()
        precs.update(self.quantization_output_precisions)
        return sorted(precs)

    @property
    def subdirectory(self) -> str:
        return f"public/{self.name}"

    @property
    def onnx_file_name(self) -> str:
        """The ONNX name from ``--output-file`` (OMZ uses underscores), else name_with_underscores."""
        for arg in self.conversion_to_onnx_args:
            if arg.startswith("--output-file="):
                return PurePosixPath(arg.split("=", 1)[1]).name
        return self.name.replace("-", "_") + ".onnx"

    @property
    def checkpoint_file(self) -> ModelFile:
        """The weights file (the one ``.ckpt`` / ``.pth`` / ``.pt`` entry)."""
        for f in self.files:
            if f.name.endswith((".ckpt", ".pth", ".pt")):
                return f
        raise ConfigError(f"{self.path}: model {self.name} lists no checkpoint file")

    def template_vars(self, download_dir: Path, output_dir: Path) -> dict[str, str]:
        """OMZ's ``$dl_dir``, ``$conv_dir`` and ``$config_dir``."""
        return {
            "dl_dir": str(download_dir / self.subdirectory),
            "conv_dir": str(output_dir / self.subdirectory),
            "config_dir": str(self.path.parent),
        }


def expand(template: str, variables: dict[str, str]) -> str:
    """Substitute ``$name`` / ``${name}`` as OMZ's string.Template does; unknown names stay."""
    import string

    return string.Template(template).safe_substitute(variables)


def _format_error(path: Path, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p not in ("http", "google_drive"))
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return ConfigError(f"{path}: field '{loc or '<root>'}': {err['msg']}{more}")


def load_config(path: str | os.PathLike[str], name: str | None = None) -> ModelConfig:
    """Parse and validate one model.yml; ``name`` defaults to the file's (or folder's) name."""
    path = Path(path)
    if name is None:
        name = path.parent.name if path.name == "model.yml" else path.stem
    try:
        if path.is_file() and path.stat().st_size > MAX_TEXT_BYTES:
            raise ConfigError(f"{path}: more than {MAX_TEXT_BYTES // 1024} KiB, not a model.yml")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {detail}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, found {type(data).__name__}"
        )
    try:
        return ModelConfig.model_validate({**data, "name": name, "path": path})
    except ValidationError as exc:
        raise _format_error(path, exc) from None


def builtin_models_dir() -> Path:
    """The configs shipped with the package (``model_configs/`` in the source tree).

    An installed wheel carries them as ``toolkit.model_configs``; a source checkout on
    ``sys.path`` has them beside the package.
    """
    beside = Path(__file__).resolve().parents[2] / "model_configs"
    if beside.is_dir():
        return beside
    return Path(str(resources.files("toolkit.model_configs")))


def _config_files(directory: Path) -> Iterable[tuple[str, Path]]:
    if not directory.is_dir():
        raise UsageError(f"models dir {directory} does not exist or is not a folder")
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix in (".yml", ".yaml"):
            yield entry.stem, entry
        elif entry.is_dir() and (entry / "model.yml").is_file():
            yield entry.name, entry / "model.yml"


def models_dirs(extra: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """The built-in folder, then ``$MODNET_TOOLS_MODELS_DIR`` (os.pathsep-separated), then ``extra``."""
    dirs = [builtin_models_dir()]
    env = os.environ.get(MODELS_DIR_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in extra]
    return dirs


def discover(extra_dirs: Sequence[str | os.PathLike[str]] = ()) -> dict[str, ModelConfig]:
    """Every known model by name; a later folder's config overrides an earlier one's."""
    found: dict[str, Path] = {}
    for directory in models_dirs(extra_dirs):
        for name, path in _config_files(directory):
            found[name] = path
    return {name: load_config(path, name) for name, path in sorted(found.items())}


#: The most a ``--list`` file or a model.yml may hold: both are a few hundred bytes in
#: practice, and ``--list /dev/zero`` must not read until memory runs out.
MAX_TEXT_BYTES = 1 << 20


def read_bounded_text(path: Path, what: str, error: type[ToolkitError]) -> str:
    """The UTF-8 text of a small file, refusing more than :data:`MAX_TEXT_BYTES` (a device,
    a FIFO that never ends, a large binary) with one line naming the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise error(f"{what} {path}: more than {MAX_TEXT_BYTES // 1024} KiB, not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not UTF-8 text") from None


def _read_list_file(path: str | os.PathLike[str]) -> list[str]:
    lines = read_bounded_text(Path(path), "model list", UsageError).splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def select(
    models: dict[str, ModelConfig],
    *,
    names: str | None = None,
    all_models: bool = False,
    list_file: str | os.PathLike[str] | None = None,
    default: str | None = DEFAULT_MODEL,
) -> list[ModelConfig]:
    """OMZ's model selection: one of ``--name`` patterns, ``--all``, ``--list``; else ``default``.

    Patterns are shell wildcards, case-sensitive, comma-separated. A pattern that matches
    nothing is an error (exit 1), as in omz_downloader.
    """
    given = sum(x is not None and x is not False for x in (names, list_file)) + int(all_models)
    if given > 1:
        raise UsageError("use only one of --name, --all and --list")
    if all_models:
        return list(models.values())
    if list_file is not None:
        patterns = _read_list_file(list_file)
    elif names is not None:
        patterns = [p.strip() for p in names.split(",") if p.strip()]
        if not patterns:
            raise UsageError("--name needs at least one pattern")
    elif default is not None:
        patterns = [default]
    else:
        raise UsageError("select models with --name, --all or --list")
    chosen: dict[str, ModelConfig] = {}
    for pattern in patterns:
        matched = [n for n in models if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(f'No matching models: "{pattern}"')
        for n in matched:
            chosen.setdefault(n, models[n])
    return list(chosen.values())


def normalize_precision(value: str, option: str = "--precision") -> str:
    """``fp32`` -> ``FP32``: precision folder names are upper case, what users type may not be.
    Anything else is one usage error naming the option and the choices."""
    norm = value.strip().upper()
    if norm not in KNOWN_PRECISIONS:
        raise UsageError(
            f"{option} {value!r}: not a precision; use one of {', '.join(sorted(KNOWN_PRECISIONS))}"
        )
    return norm


def parse_precisions(text: str | None, *, allowed: Iterable[str] = KNOWN_PRECISIONS) -> set[str]:
    """``FP16,FP32`` -> {"FP16", "FP32"}; unknown ones are an error as in OMZ (exit 1)."""
    if text is None:
        return set(allowed)
    wanted = {p.strip().upper() for p in text.split(",") if p.strip()}
    unknown = sorted(wanted - set(KNOWN_PRECISIONS))
    if unknown:
        raise ConfigError(f"Unknown precisions specified: {', '.join(unknown)}.")
    return wanted
