"""README's Python snippets: every ```python block runs as written (in a fresh
namespace, from a temporary working directory), the losses, the Python API and the
custom environment alike."""

import os

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
RUNNABLE_SECTION = "## Using the losses"


def python_blocks(path: str = README) -> list[tuple[str, int, str]]:
    """``(section heading, first line number, code)`` of every ```python block in ``path``."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, section, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line.strip()
        elif line.strip() == "```python":
            end = i + 1
            while lines[end].strip() != "```":
                end += 1
            blocks.append((section, i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks()
RUNNABLE = [b for b in BLOCKS if b[0] == RUNNABLE_SECTION]


def _id(block: tuple[str, int, str]) -> str:
    return f"README.md:{block[1]}"


def test_the_losses_section_has_runnable_snippets():
    assert len(RUNNABLE) >= 2, f"README's {RUNNABLE_SECTION!r} section has no python blocks"


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_every_python_block_compiles(block):
    _, line, code = block
    compile(code, f"README.md:{line}", "exec")


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_every_python_block_runs_as_written(block, tmp_path, monkeypatch):
    _, line, code = block
    monkeypatch.chdir(tmp_path)  # what a block writes (runs/...) goes there
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_snippet"})
