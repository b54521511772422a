"""The package's folders import one way. Every module's imports are read with `ast` through pyproject's
package-dir (import tools cannot follow an editable install's mapped folders), and each folder may import
only the folders its layer builds on:

    core (edgecls: registry, models, data, checkpoint, errors, file I/O, ONNX metadata, timing, ASGI)
      <- runtime                        the edge runtime: onnxruntime, numpy, Pillow
      <- train, export                  export validates on the runtime's own engine
      <- serve, web, scale              deployment, on the runtime
      <- commands                       the CLI, bench, evaluate, samples

Folders of one layer never import each other. Imports inside a function count as much as top-level ones.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "core": set(),
    "runtime": {"core"},
    "train": {"core"},
    "export": {"core", "runtime"},
    "serve": {"core", "runtime"},
    "web": {"core", "runtime"},
    "scale": {"core", "runtime"},
    "commands": {"core", "runtime", "train", "export", "serve", "web", "scale"},
}
# `python -m edgecls` (torchrun starts the CLI this way) must run the command line: the one entry module.
ENTRY_POINTS = {REPO / "core" / "__main__.py"}
# An edge box has onnxruntime, numpy and Pillow: these never reach torch, directly or through an import.
TORCH_FREE = ("runtime", "serve", "web")


def package_dirs() -> dict[str, str]:
    """Dotted package -> folder, from pyproject.toml."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-dir"]


def folder_of(module: str, dirs: dict[str, str]) -> str | None:
    """The folder holding `module` (edgecls.runtime.infer -> runtime), None outside edgecls."""
    best = max((p for p in dirs if module == p or module.startswith(p + ".")), key=len, default=None)
    return dirs[best] if best else None


def module_name(path: Path, dirs: dict[str, str]) -> str:
    folder = path.parent.relative_to(REPO).parts[0]
    package = next(p for p, d in dirs.items() if d == folder)
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def _nodes(tree: ast.AST, top_level: bool):
    """Every node, or with `top_level` only those that run on import (not inside a function)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [
            n
            for n in ast.iter_child_nodes(node)
            if not (top_level and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
        ]


def imports_of(path: Path, dirs: dict[str, str], top_level: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path`, relative ones resolved; `top_level`: only the
    imports that run when the module is imported."""
    package = module_name(path, dirs)
    if path.stem != "__init__":
        package = package.rsplit(".", 1)[0]
    found = []
    for node in _nodes(ast.parse(path.read_text(), str(path)), top_level):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from edgecls import train` names a sub-package, not a symbol of core
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if f"{target}.{a.name}" in dirs]
    return found


def sources() -> list[Path]:
    return sorted(p for folder in set(package_dirs().values()) - DATA_ONLY for p in (REPO / folder).glob("*.py"))


DATA_ONLY = {"artifacts"}  # mapped as edgecls.artifacts so that the wheel carries the shipped models


def test_every_folder_is_mapped_and_has_a_layer():
    assert set(package_dirs().values()) == set(ALLOWED) | DATA_ONLY
    assert not [p for folder in DATA_ONLY for p in (REPO / folder).glob("**/*.py")]
    assert not (REPO / "edgecls").exists(), "a folder named edgecls/ in the checkout shadows the installed package"


def test_folders_import_only_the_layers_below():
    dirs = package_dirs()
    wrong = []
    for path in sources():
        if path in ENTRY_POINTS:
            continue
        here = path.parent.name
        for line, target in imports_of(path, dirs):
            there = folder_of(target, dirs)
            if there is not None and there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target} ({here} -> {there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_folders():
    dirs = package_dirs()
    edges: dict[str, set[str]] = {folder: set() for folder in ALLOWED}
    for path in sources():
        if path in ENTRY_POINTS:
            continue
        for _, target in imports_of(path, dirs):
            there = folder_of(target, dirs)
            if there is not None and there != path.parent.name:
                edges[path.parent.name].add(there)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    assert [f for f in edges if reaches(f, f, {f})] == []


@pytest.mark.parametrize("folder", TORCH_FREE)
def test_the_runtime_side_never_imports_torch(folder):
    """Statically: no module of these folders imports torch anywhere, and no edgecls module that importing
    them loads imports it at its top level (registry.build, say, imports the models only when called)."""
    dirs = package_dirs()
    by_module = {module_name(p, dirs): p for p in sources()}
    own = {module_name(p, dirs) for p in (REPO / folder).glob("*.py")}
    todo = list(own)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module not in by_module:
            continue
        seen.add(module)
        for line, target in imports_of(by_module[module], dirs, top_level=module not in own):
            top = target.split(".")[0]
            assert top not in ("torch", "torchvision", "onnx", "onnxscript"), (
                f"{by_module[module].relative_to(REPO)}:{line} imports {target}, reached from {folder}/"
            )
            if target in by_module:
                todo.append(target)
            elif target.rsplit(".", 1)[0] in by_module:  # from package import module
                todo.append(target.rsplit(".", 1)[0])


def test_the_layer_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: an upward import is reported (so a silent parser could not pass the tests)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from edgecls.commands.cli import main\nimport edgecls.serve.app\nfrom .. import train\n")
    dirs = package_dirs()
    monkeypatch.setattr(sys.modules[__name__], "module_name", lambda path, dirs: "edgecls.runtime.bad")
    targets = {folder_of(t, dirs) for _, t in imports_of(bad, dirs)}
    assert targets == {"commands", "serve", "train", "core"}
    assert not targets <= ALLOWED["runtime"]
