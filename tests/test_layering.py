"""Imports point down: dassl/ knows nothing of clip/, trainers/, datasets/; clip/ nothing of dassl/; no import cycle.

Every import statement counts, those inside functions too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dassl", "clip", "trainers", "datasets")
# package -> the project's top-level names it may never import
FORBIDDEN = {
    "dassl": ("clip", "trainers", "datasets", "train", "tools"),
    "clip": ("dassl", "trainers", "datasets", "train", "tools"),
}


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for train.py and every module of the project's packages under ``root``."""
    modules = {"train": root / "train.py"} if (root / "train.py").is_file() else {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_statements(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(absolute module, imported name or None) for every import in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found += [(module, alias.name) for alias in node.names]
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from a import b`` is ``a.b`` when that is a module)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, attr in import_statements(name, path):
            if attr and f"{module}.{attr}" in modules:
                targets.add(f"{module}.{attr}")
            elif module in modules:
                targets.add(module)
        graph[name] = targets
    return graph


def upward_imports(root: Path) -> list[str]:
    """``module imports target`` for every import that breaks FORBIDDEN."""
    found = []
    for name, path in project_modules(root).items():
        banned = FORBIDDEN.get(name.split(".")[0], ())
        for module, _ in import_statements(name, path):
            if module.split(".")[0] in banned:
                found.append(f"{name} imports {module}")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (strongly connected, size > 1)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return cycles


def test_dassl_and_clip_import_nothing_above_them():
    assert upward_imports(REPO) == []


def test_no_import_cycle():
    graph = import_graph(REPO)
    assert "dassl.engine.trainer" in graph["dassl.engine"]  # the graph sees the package's own imports
    assert import_cycles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    (tmp_path / "dassl" / "engine").mkdir(parents=True)
    (tmp_path / "clip").mkdir()
    (tmp_path / "dassl" / "__init__.py").write_text("")
    (tmp_path / "dassl" / "engine" / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "dassl" / "engine" / "a.py").write_text("def f():\n    from dassl.engine import b\n")
    (tmp_path / "dassl" / "engine" / "b.py").write_text("from . import a\nimport clip.text\n")
    (tmp_path / "clip" / "__init__.py").write_text("")
    (tmp_path / "clip" / "text.py").write_text("from dassl.utils import x\n")
    assert upward_imports(tmp_path) == ["dassl.engine.b imports clip.text", "clip.text imports dassl.utils"]
    assert import_cycles(import_graph(tmp_path)) == [["dassl.engine.a", "dassl.engine.b"]]
