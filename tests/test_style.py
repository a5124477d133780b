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
    imports = {}
    for name in ("training", "host_training"):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        imports[name] = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "host_training" not in imports["training"]
    assert "training" not in imports["host_training"]
    for name in imports:
        assert "shell" in imports[name], name
