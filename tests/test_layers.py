"""The package's layers only point down, and say so in their imports.

    cli -> commands -> terminal -> client -> core -> ext, v1
                    -> server ---------------^
                    -> server -> cluster ----^   (the replicated log)

Every import inside the package is relative, so a tool that reads paths sees
the real graph although `src/` is installed as `onshi`. The test reads the
source (ast), so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# package -> the packages it may import (besides itself)
MAY_IMPORT = {
    "ext": {"v1"},
    "v1": set(),
    "core": {"ext", "v1"},
    "client": {"core", "v1"},
    "cluster": {"core", "ext", "v1"},
    "server": {"cluster", "core", "ext", "v1"},
    "terminal": {"client", "core", "v1"},
    "commands": {"client", "cluster", "core", "ext", "server", "terminal", "v1"},
    "": {"commands"},  # src/cli.py
}
# The domain does not parse command lines (servers and tools above it may).
FORBIDDEN = {"core": {"argparse"}}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "v1" not in p.relative_to(SRC).parts)


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else ""


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    here = ["onshi", *path.relative_to(SRC).parent.parts]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import x, y: each is a module of that package
                    out.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
                    continue
                out.append((node.lineno, name))
            else:
                out.append((node.lineno, node.module or ""))
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    package = package_of(path)
    wrong = []
    for line, name in imported(path):
        top = name.split(".")
        if top[0] == "onshi":
            target = top[1] if len(top) > 1 else ""
            if target not in ("cli",) and target != package and target not in MAY_IMPORT[package]:
                wrong.append(f"{path.name}:{line} imports {name}")
        elif top[0] in FORBIDDEN.get(package, ()):
            wrong.append(f"{path.name}:{line} imports {name}")
    assert not wrong, f"{package or 'onshi'} may import only {sorted(MAY_IMPORT[package])}: {wrong}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_inside_the_package_are_relative(path):
    absolute = [
        f"{path.name}:{node.lineno}"
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "onshi")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "onshi" for a in node.names))
    ]
    assert not absolute, f"absolute onshi imports: {absolute}"


def test_the_layer_test_sees_a_wrong_import(tmp_path, monkeypatch):
    """The checks above can fail: a core module importing the server is caught."""
    core = tmp_path / "core"
    core.mkdir()
    (core / "bad.py").write_text("import argparse\nfrom ..server import auth\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    with pytest.raises(AssertionError, match=r"bad.py:1 imports argparse.*bad.py:2 imports onshi.server"):
        test_imports_point_down(core / "bad.py")
