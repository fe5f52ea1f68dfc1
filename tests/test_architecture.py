"""The shape of the house (docs/architecture.md): the package's imports form no cycle, no module
imports upward from the package face, and a round's context is built in one place only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "fedtheory"
ROOT = PKG.parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the fedtheory modules it imports (at module level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t.startswith("fedtheory") and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if _is_parent(v, u):  # an upward import: the test below reports it
                continue
            if state.get(v) == 1:
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def _is_parent(pkg: str, mod: str) -> bool:
    """``pkg`` is a package that contains ``mod`` (importing a sibling through the package's
    __init__ is resolved to the sibling above, so this edge is the package face itself)."""
    return mod.startswith(pkg + ".")


def test_the_package_imports_form_no_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_upward_from_the_package_face():
    """A submodule never imports the package it belongs to (``from . import __version__``,
    ``import fedtheory``): the face imports the parts, never the other way round."""
    graph = import_graph()
    upward = sorted((m, t) for m, ts in graph.items() for t in ts if _is_parent(t, m))
    assert upward == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {
        "fedtheory.a": {"fedtheory.b"},
        "fedtheory.b": {"fedtheory.c"},
        "fedtheory.c": {"fedtheory.a"},
        "fedtheory.d": set(),
    }
    assert cycles(graph) == [["fedtheory.a", "fedtheory.b", "fedtheory.c", "fedtheory.a"]]
    assert cycles({"fedtheory.a": {"fedtheory.b"}, "fedtheory.b": set()}) == []


@pytest.mark.parametrize(
    "folder", ["fedtheory", "proofs_checks", "benchmarks", "notebooks", "tests"]
)
def test_a_round_context_is_built_only_by_its_constructor(folder):
    """``RoundContext(`` appears only in fedtheory/methods/base.py (``round_context``)."""
    allowed = {PKG / "methods" / "base.py", Path(__file__).resolve()}
    hits = [
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*.py")
        if p not in allowed and re.search(r"\bRoundContext\(", p.read_text("utf-8"))
    ]
    assert hits == []


def test_no_hyperparameter_takes_a_name_of_the_method_lifecycle():
    """Hyperparameters (a method's dataclass fields) have their own namespace: none is called
    like a method or class attribute of ``Method`` (``start``, ``round``, ``params``, ``name``,
    ...), which the field would shadow. ``init``, the transitional alias of ``start``, is the
    one name a method may take (FedNL's option ``init``, as the spec writes it)."""
    import dataclasses

    from fedtheory.methods import METHODS
    from fedtheory.methods.base import LIFECYCLE, Method

    public = {n for n in vars(Method) if not n.startswith("_")} - {"init"}
    assert public == set(LIFECYCLE)
    clashes = {
        name: sorted({f.name for f in dataclasses.fields(cls)} & public)
        for name, cls in METHODS.items()
    }
    assert {name: c for name, c in clashes.items() if c} == {}
    assert "init" in {f.name for f in dataclasses.fields(METHODS["fednl"])}
