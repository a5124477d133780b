"""docs/bad_input.md's bad-input table lists every bad input the tests try."""

import os

import pytest

from tests import test_policy
from tests.cli import test_cli
from tests.distributed import test_multihost
from tests.experiments import test_compare, test_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BAD_INPUT_DOC = os.path.join(ROOT, "docs", "bad_input.md")
CASES = [
    *[("train.py", a, m) for a, m in test_cli.BAD_INPUTS],
    *[("benchmark.py", a, m) for a, m in test_cli.BENCHMARK_BAD_INPUTS],
    *[("train.py", a, m) for a, m in test_multihost.MULTIPROCESS_BAD_INPUTS],
    *[("benchmark.py", a, m) for a, m in test_sweep.SWEEP_BAD_INPUTS],
    *[("benchmark.py", a, m) for a, m in test_compare.COMPARE_BAD_INPUTS],
    *[("evaluate.py", a, m) for a, m in test_policy.EVALUATE_BAD_INPUTS],
]


@pytest.mark.parametrize(("script", "args", "message"), CASES)
def test_bad_input_is_in_the_bad_input_table(script, args, message):
    with open(BAD_INPUT_DOC, encoding="utf-8") as f:
        rows = [line for line in f if line.startswith(f"| {script} | `{' '.join(args)}` |")]
    assert rows, f"docs/bad_input.md's bad-input table lacks {script} {' '.join(args)}"
    assert message.replace("|", "\\|") in rows[0]
