"""The package's layers: imports go one way (cli → stages → viz | organism → eval → interventions → models/data →
method → foundation), and no module imports itself back through any chain (function-local imports included)."""

import ast
from pathlib import Path

import pytest

import workbench

pytestmark = pytest.mark.unit

ROOT = Path(workbench.__file__).parent
LAYERS = {  # package (or module) -> layer; a module may import its own package and lower layers only
    "workbench": 0, "workbench.errors": 0, "workbench.io": 0, "workbench.paths": 0, "workbench.registry": 0,
    "workbench.method": 1,
    "workbench.models": 2, "workbench.data": 2,
    "workbench.interventions": 3,
    "workbench.eval": 4,
    "workbench.viz": 5, "workbench.organism": 5,
    "workbench.stages": 6,
    "workbench.cli_options": 7, "workbench.api": 7,
    "workbench.cli_parser": 8,
    "workbench.cli": 9,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every workbench module `path` imports, anywhere in the file (but under `if TYPE_CHECKING:`, which names types
    for annotations and never runs)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("workbench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES}


def unit_of(module: str) -> str:
    """The layer entry a module belongs to (its longest prefix in LAYERS)."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return ".".join(parts[:k])
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        unit_of(module)


def test_imports_go_down_the_layers():
    wrong = []
    for module, targets in GRAPH.items():
        own = unit_of(module)
        for target in targets:
            other = unit_of(target)
            if target == "workbench" or other == own or LAYERS[own] == LAYERS[other] == 0:
                continue  # within a package, and among the foundation modules, the cycle test alone applies
            if LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{module} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[other]})")
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt == "workbench":
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
