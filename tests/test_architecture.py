"""The layout's rules (docs/architecture.md), checked on the source: layers, no cycles, sizes.

Every module of ``indexer`` and ``app`` is parsed with ``ast`` (imports inside functions count:
a lazy import is still a dependency) and the import graph is built from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("indexer", "app")
MAX_LINES = 400

# Top to bottom: a module may import its own package, its layer's shared leaves and any layer
# below its own; names on one line are siblings that must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("app",),
    ("indexer.cli",),
    ("indexer.library",),
    ("indexer.library_status",),
    ("indexer.watch",),
    ("indexer.ingest", "indexer.search", "indexer.tags", "indexer.learn", "indexer.ocr"),
    ("indexer.embed", "indexer.store"),
    ("indexer.config", "indexer.types"),
]
# Only the SQLite backend may talk to the database driver.
_BACKENDS = ("indexer.store.sqlite", "indexer.store.postgres")
DRIVER_MODULES = {"sqlalchemy": _BACKENDS, "sqlite3": ("indexer.store.sqlite",),
                  "psycopg": ("indexer.store.postgres",), "pgvector": ("indexer.store.postgres",)}
# Backend internals: reached only from inside the store package.
STORE_PRIVATE = ("indexer.store.sqlite", "indexer.store.vectors", "indexer.store.postgres")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The longest known module ``name`` starts with (a name imported from a module is not
    a module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of ``known`` (and top-level third-party names) that ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` depends on the submodule; ``from mod import name`` on mod.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]  # fmt: skip
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target:
                found.add(target)
            elif name:
                found.add(name.split(".")[0])
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t in imports_of(m, p, known) if t in known} for m, p in known.items()}


def external_imports() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t in imports_of(m, p, known) if t not in known} for m, p in known.items()}


def _layer_of(module: str) -> tuple[int, str] | None:
    for level, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                return level, name
    return None


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        here = _layer_of(src)
        for dst in sorted(targets):
            there = _layer_of(dst)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                bad.append(f"{src} -> {dst} ({here[1]} may not import {there[1]})")
    return bad


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path a -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_is_in_a_layer():
    assert [m for m in modules() if _layer_of(m) is None and m != "indexer"] == []


def test_imports_follow_the_layers():
    assert layer_violations(graph()) == []


def test_no_import_cycles():
    assert find_cycle(graph()) is None


def test_modules_are_small():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_only_the_store_backend_sees_the_driver_and_its_internals():
    bad = []
    for src, names in external_imports().items():
        for name in names & set(DRIVER_MODULES):
            if not src.startswith(DRIVER_MODULES[name]):
                bad.append(f"{src} imports {name}")
    for src, targets in graph().items():
        for dst in targets:
            if dst.startswith(STORE_PRIVATE) and not src.startswith("indexer.store"):
                bad.append(f"{src} imports {dst}")
    assert bad == []


def test_the_core_never_imports_the_ui():
    assert [f"{s} -> {d}" for s, ts in graph().items() if s.startswith("indexer")
            for d in ts if d.startswith("app")] == []  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"indexer.store.records": {"indexer.library"}}, "layer"),
        ({"indexer.tags.sync": {"indexer.search.engine"}}, "layer"),
        ({"indexer.store.errors": {"indexer.store.base"}}, "cycle"),
    ],
)
def test_the_checks_catch_a_back_import(extra, expect):
    """Negative controls: the same checks fail on a graph with one bad edge added."""
    g = {m: set(t) for m, t in graph().items()}
    for src, targets in extra.items():
        g[src] |= targets
    if expect == "layer":
        assert layer_violations(g)
    else:
        assert find_cycle(g) is not None
