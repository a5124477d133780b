"""The package's import graph, built with ``ast``: no cycles between modules, no arrow
that points up the ladder of rooms that BUILD.md lists, and few loose modules.

Every ``import`` counts, also those inside functions (a deferred import is still a
dependency). A room is a subpackage of ``jaxrl_dist`` or a loose top-level module.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxrl_dist"

# The ladder (BUILD.md, "Layout"): a room may import rooms on lower rungs and itself,
# never one on its own rung or above. Rooms on one rung are siblings.
RUNGS = (
    ("errors", "types"),
    ("cpu",),
    ("tuning",),
    ("losses", "replay", "nn", "parallel", "distributed"),
    ("envs",),
    ("agents",),
    ("run",),
    ("anakin", "sebulba"),
    ("api", "policy"),
    ("cli",),
)
RANK = {room: rank for rank, rooms in enumerate(RUNGS) for room in rooms}
MAX_LOOSE_MODULES = 8


def module_name(path: pathlib.Path) -> str:
    parts = ("jaxrl_dist",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The ``jaxrl_dist`` modules ``name`` imports (a package's ``__init__`` counts as
    the package; ``from pkg import module`` as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_every_room_is_on_the_ladder():
    rooms = {room(name) for name in modules()} - {None}
    assert rooms <= set(RANK), f"rooms missing from RUNGS: {sorted(rooms - set(RANK))}"


def test_no_arrow_points_up_or_across():
    bad = []
    for name, targets in graph().items():
        here = room(name)
        for target in targets:
            there = room(target)
            if here is None or there is None or here == there:
                continue  # the package's own __init__ (lazy API) and arrows inside a room
            if RANK[there] >= RANK[here]:
                bad.append(f"{name} -> {target}")
    assert not bad, "imports up or across the ladder:\n" + "\n".join(sorted(bad))


def test_few_loose_modules():
    loose = sorted(p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= MAX_LOOSE_MODULES, loose


@pytest.mark.parametrize("module", ["jaxrl_dist.api", "jaxrl_dist.policy"])
def test_the_python_api_does_not_import_absl(module):
    edges = graph()
    seen, todo = set(), [module]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    assert "jaxrl_dist.cli" not in seen and not any(m.startswith("jaxrl_dist.cli.") for m in seen)
    for name in seen:
        tree = ast.parse(modules()[name].read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                assert not any(n == "absl" or n.startswith("absl.") for n in names), name
