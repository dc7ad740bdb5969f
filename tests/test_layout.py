"""The package tree shows the pipeline: no stage imports from a stage that comes after it.

Data flows one way (download -> model -> convert -> matting -> evaluate -> perf -> serve ->
cluster -> cli); a backwards import would make an early stage depend on a later one (and the
inference stages on torch). Every import in every module is read from its syntax tree,
including the ones inside functions, so a lazy import cannot hide a backwards edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolkit"

#: rank of each stage; the bottom modules (errors, paths, ...) are 0 and usable by all.
STAGES = {
    "download": 1,
    "model": 2,
    "convert": 3,
    "matting": 4,
    "evaluate": 5,
    "perf": 6,
    "serve": 7,
    "cluster": 8,
    "cli": 9,
    "__main__": 10,
}


def _stage(module: str) -> int:
    """The rank of ``toolkit.<stage>...`` (0 for the bottom modules and the package itself)."""
    parts = module.split(".")
    return STAGES.get(parts[1], 0) if len(parts) > 1 else 0


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            # ``from toolkit import paths`` names a module of the package
            if node.module == "toolkit":
                found += [f"toolkit.{alias.name}" for alias in node.names]
    return [name for name in found if name == "toolkit" or name.startswith("toolkit.")]


#: the package's own ``__init__`` is the public facade: it re-exports names of every stage
#: (lazily, for type checkers only), so it is the one module outside the ordering.
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_stage_is_a_subpackage_with_a_docstring() -> None:
    for stage in ("download", "model", "convert", "matting", "evaluate", "perf", "serve", "cli"):
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), stage
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), stage


def test_top_level_holds_only_the_bottom_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == [
        "__init__.py",
        "__main__.py",
        "errors.py",
        "fsutil.py",
        "hashing.py",
        "paths.py",
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_later_stage(path: Path) -> None:
    own = _stage(_module_name(path))
    later = [name for name in _imports(path) if _stage(name) > own]
    assert not later, f"{_module_name(path)} (stage {own}) imports later stages: {later}"


def test_the_check_sees_a_backwards_import(tmp_path: Path) -> None:
    """The scanner itself must catch a lazy import inside a function."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from toolkit.perf.fastpath import x\n", encoding="utf-8")
    assert _imports(bad) == ["toolkit.perf.fastpath"]
    assert _stage("toolkit.perf.fastpath") > _stage("toolkit.matting.session")


def test_public_api_is_importable_from_the_package() -> None:
    import toolkit

    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None
    from toolkit.matting.session import MattingSession

    assert toolkit.MattingSession is MattingSession
