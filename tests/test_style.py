"""House rules that a reader relies on: no function in the package longer than 100 lines,
and no dated measurement in its code (those live in docs/benchmarks/)."""

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxrl_dist"


def test_no_function_in_the_package_is_longer_than_100_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 100:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                f"{node.name} ({length} lines)")
    assert not long, long


def test_no_dated_figures_in_the_package():
    date = re.compile(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}")
    dated = [
        f"{path.relative_to(PACKAGE.parent)}:{i}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if date.search(line)
    ]
    assert not dated, dated


def test_the_two_acting_paths_share_the_run_shell_not_each_other():
    for room, other in (("anakin", "sebulba"), ("sebulba", "anakin")):
        tree = ast.parse((PACKAGE / room / "training.py").read_text(encoding="utf-8"))
        imported = {
            f"{node.module}.{alias.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) for alias in node.names
        }
        assert "jaxrl_dist.run.shell" in imported, room
        assert not any(other in name for name in imported), room
