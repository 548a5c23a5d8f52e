"""The layering of DESIGN.md, read from the imports of every module (so it stays true as code moves).

``diffusion/`` imports nothing of mediadiff outside itself; ``utils/`` imports no other mediadiff package;
the shared packages (``nn/``, ``text/``, ``eval/``, ``train/``) import no modality; a modality
(``video/``, ``audio/``) imports neither ``train/`` nor another modality; nothing below ``pipelines/``
imports ``pipelines/``, the CLI or the web page (``serve``); only ``mediadiff/serve.py`` imports gradio (an
optional extra). Every import counts: top-level, inside functions (lazy), relative,
and module names handed to ``importlib.import_module`` as string constants.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mediadiff"
MODALITIES = ("video", "audio")
TOP = ("cli", "pipelines", "serve")

# package -> mediadiff packages it may not import (besides itself)
FORBIDDEN: dict[str, set[str]] = {
    "diffusion": {"*"},  # nothing of mediadiff outside itself
    "utils": {"*"},
    "nn": {*MODALITIES, *TOP, "train", "eval"},
    "text": {*MODALITIES, *TOP, "train", "eval"},
    "eval": {*MODALITIES, *TOP, "train"},
    "train": {*MODALITIES, *TOP},
    "video": {"train", "audio", *TOP},
    "audio": {"train", "video", *TOP},
    "pipelines": {"cli", "serve"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """The mediadiff packages a module imports (``mediadiff.X`` -> ``X``), with the first line of each."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)  # mediadiff.video.io
    package_parts = module.split(".")[:-1]  # the package a relative import starts from (__init__ too)
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        parts = name.split(".")
        if parts[0] == "mediadiff" and len(parts) > 1:
            found.setdefault(parts[1], line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                if node.module is None:  # from . import x, from .. import y
                    for alias in node.names:
                        add(f"{target}.{alias.name}", node.lineno)
                add(target, node.lineno)
            elif node.module:
                add(node.module, node.lineno)
                if node.module == "mediadiff":
                    for alias in node.names:
                        add(f"mediadiff.{alias.name}", node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                add(node.args[0].value, node.lineno)
    return found


def violations(package: str) -> list[str]:
    rules = FORBIDDEN[package]
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported, line in imported_packages(path).items():
            if imported == package:
                continue
            if "*" in rules or imported in rules:
                out.append(f"{path.relative_to(ROOT.parent)}:{line} imports mediadiff.{imported}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_the_layering(package):
    if not (ROOT / package).is_dir():
        pytest.skip(f"mediadiff/{package}/ does not exist yet")
    assert violations(package) == []


def test_the_reader_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The checker itself: each import form in a module of a fake tree is found."""
    fake = tmp_path / "mediadiff" / "video"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "m.py").write_text(
        "import mediadiff.train.trainer\n"
        "from mediadiff.audio import io\n"
        "from ..pipelines import base\n"
        "from .. import cli\n"
        "from . import io as local\n"
        "def f():\n"
        "    from mediadiff.nn import Attention\n"
        "    import importlib\n"
        "    importlib.import_module('mediadiff.eval.frechet')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "mediadiff")
    found = imported_packages(fake / "m.py")
    assert set(found) == {"train", "audio", "pipelines", "cli", "video", "nn", "eval"}
    assert violations("video") == [
        "mediadiff/video/m.py:1 imports mediadiff.train",
        "mediadiff/video/m.py:2 imports mediadiff.audio",
        "mediadiff/video/m.py:3 imports mediadiff.pipelines",
        "mediadiff/video/m.py:4 imports mediadiff.cli",
    ]


def test_every_package_has_a_rule():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages - set(FORBIDDEN) == set(), "add the new package's rule to FORBIDDEN"


def test_only_the_web_page_imports_gradio():
    """gradio is the optional ``[serve]`` extra: no other module may import it, at any level."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] == "gradio" for n in names):
                found.append(str(path.relative_to(ROOT.parent)))
    assert sorted(set(found)) == ["mediadiff/serve.py"]
