"""The layers, read from the source with ``ast``: nothing is imported, so the tests see every import statement
(at module level, inside functions and under ``TYPE_CHECKING`` alike).

``workflows/`` is pure rules (the standard library and ``transitions`` only); ``persistence/`` knows nothing of
the engine, the scheduler or the entry points; ``engine/`` nothing of the scheduler or the entry points;
``scheduler/`` nothing of the entry points; and no module imports, directly or through others, a module that
imports it back. Paths are anchored at this file, and every test asserts it found the files (and the imports) it
checks, so none passes by reading an empty folder when pytest runs from elsewhere.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The project's own top-level folders: their modules make up the import graph.
PROJECT = ("workflows", "engine", "persistence", "scheduler", "entry", "bench")


@dataclass(frozen=True)
class Import:
    """One module a source file imports: its dotted name and the line of the statement."""

    target: str
    line: int


@dataclass(frozen=True)
class Module:
    """A source file: its dotted name, its path relative to the root, and every module it imports."""

    name: str
    path: str
    imports: tuple[Import, ...]


def _dotted(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, known: set[str]) -> Iterator[Import]:
    """Every module ``path`` (the module ``name``) imports, wherever the statement is. Relative imports are made
    absolute; ``from a import b`` imports the module ``a.b`` when ``a.b`` is one of ``known``, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield Import(submodule if submodule in known else source, node.lineno)


def read_modules(root: Path, folders: tuple[str, ...]) -> dict[str, Module]:
    """Every ``.py`` file under ``root``'s ``folders``, by dotted name (``entry.web.app``)."""
    paths = sorted(path for folder in folders for path in (root / folder).rglob("*.py"))
    known = {_dotted(path, root) for path in paths}
    modules = {}
    for path in paths:
        name = _dotted(path, root)
        modules[name] = Module(name, path.relative_to(root).as_posix(), tuple(_imports(path, name, known)))
    return modules


@functools.cache
def project_modules() -> dict[str, Module]:
    """The project's modules (read once per process)."""
    return read_modules(ROOT, PROJECT)


def inside(name: str, folder: str) -> bool:
    """Whether the dotted ``name`` is the package ``folder`` or one of its modules."""
    return name == folder or name.startswith(folder + ".")


def modules_under(folder: str, at_least: int) -> list[Module]:
    """The project's modules under ``folder``; fails unless there are ``at_least`` of them."""
    found = [module for module in project_modules().values() if inside(module.name, folder)]
    assert len(found) >= at_least, f"found only {len(found)} modules under {ROOT / folder}"
    return found


Cycle = tuple[tuple[str, int], ...]


def cycles(modules: dict[str, Module]) -> list[Cycle]:
    """Every elementary import cycle among ``modules``: each as the modules along it with the line of the import
    that leads to the next one, starting at its smallest module name (so each cycle is listed once); sorted."""
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}
    for module in modules.values():
        for imported in module.imports:
            if imported.target in modules:
                edges[module.name].setdefault(imported.target, imported.line)
    found: list[Cycle] = []

    def walk(start: str, node: str, path: Cycle, on_path: set[str]) -> None:
        for target, line in sorted(edges[node].items()):
            if target == start:
                found.append((*path, (node, line)))
            elif target > start and target not in on_path:
                on_path.add(target)
                walk(start, target, (*path, (node, line)), on_path)
                on_path.discard(target)

    for start in sorted(edges):
        walk(start, start, (), {start})
    return sorted(found)


def render(cycle: Cycle) -> str:
    """``a (line 3) -> b (line 9) -> a``: each module, with the line of its import of the next."""
    return " -> ".join(f"{name} (line {line})" for name, line in cycle) + f" -> {cycle[0][0]}"


# ---- the rules ---------------------------------------------------------------------------------------------


def test_workflows_import_only_the_standard_library_and_transitions():
    modules = modules_under("workflows", at_least=8)
    allowed = {"transitions", "workflows"}
    imported = [(module.path, i) for module in modules for i in module.imports]
    assert any(i.target == "transitions" for _, i in imported), "no import of transitions found in workflows/"
    outside = [f"{path}:{i.line} imports {i.target}" for path, i in imported
               if not (i.target.split(".")[0] in allowed or i.target.split(".")[0] in sys.stdlib_module_names)]
    assert outside == []


@pytest.mark.parametrize(("folder", "at_least", "forbidden"), [
    ("persistence", 14, ("engine", "scheduler", "entry")),  # 14: its modules, migrations/env.py and the revisions
    ("engine", 5, ("scheduler", "entry")),
    ("scheduler", 2, ("entry",)),
])
def test_a_lower_layer_imports_nothing_from_the_layers_above(folder, at_least, forbidden):
    modules = modules_under(folder, at_least)
    imported = [(module.path, i) for module in modules for i in module.imports]
    assert len(imported) >= 2 * at_least, f"found only {len(imported)} imports under {folder}/"
    upward = [f"{path}:{i.line} imports {i.target}" for path, i in imported
              if any(inside(i.target, above) for above in forbidden)]
    assert upward == []


def _cycles_where(entry_only: bool) -> list[str]:
    modules = project_modules()
    assert len(modules) >= 45, f"found only {len(modules)} modules under {ROOT}"
    assert sum(len(m.imports) for m in modules.values()) >= 300
    return [render(cycle) for cycle in cycles(modules)
            if all(inside(name, "entry") for name, _ in cycle) == entry_only]


def test_no_import_cycle_outside_entry():
    """No module imports (at any depth, from any function) a module that imports it back: reported with the
    path and the lines of every cycle. Cycles wholly inside entry/ are the next test's."""
    assert _cycles_where(entry_only=False) == []


def test_no_import_cycle_inside_entry():
    assert _cycles_where(entry_only=True) == []


def test_the_cycle_finder_finds_cycles_through_relative_and_function_level_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg import a\n")
    (package / "a.py").write_text("import os\nfrom pkg import b\n")
    (package / "b.py").write_text("def later():\n    import pkg.c\n    return pkg.c\n")
    (package / "c.py").write_text("from .a import name\nfrom . import d\n")
    (package / "d.py").write_text("from pkg.c import other\n")
    found = [render(cycle) for cycle in cycles(read_modules(tmp_path, ("pkg",)))]
    assert found == ["pkg.a (line 2) -> pkg.b (line 2) -> pkg.c (line 1) -> pkg.a",
                     "pkg.c (line 2) -> pkg.d (line 1) -> pkg.c"]
