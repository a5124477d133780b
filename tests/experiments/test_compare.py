"""benchmark.py --compare_with: paired rounds against another checkout, their summary and
their bad inputs (what the measurement says about a change is for README/BUILD)."""

import json
import os
import subprocess
import sys

import pytest

from tests import multiprocess as mp
from tests.cli.test_cli import BENCHMARK, script_job

BAD_CHECKOUT = "/nonexistent-checkout"
COMPARE_BAD_INPUTS = [
    ([f"--compare_with={BAD_CHECKOUT}"], "--compare_with must be a jaxrl_dist checkout"),
    (["--compare_with=.", "--compare_rounds=0"], "--compare_rounds must be >= 1, got 0"),
    (["--compare_with=.", "--repeats=2"],
     "--compare_with does not combine with --sweep or --repeats"),
    (["--compare_with=.", "--num_processes=2", "--coordinator_address=localhost:1"],
     "--compare_with runs one process per version, not a multi-process run"),
]
# Two rounds of the tree against itself, tiny, compiled without XLA's optimizations.
TINY = ["--num_envs=4", "--rollout_len=8", "--num_minibatches=2", "--num_epochs=1",
        "--total_steps=512"]


def background_runs(items, tmp_path_factory):
    del tmp_path_factory
    if not any(item.originalname == "test_two_paired_rounds_swap_cores" for item in items):
        return []
    return [script_job("compare/self", BENCHMARK, f"--compare_with={mp.ROOT}",
                       "--compare_rounds=2", *TINY, fast=True, timeout=300)]


def test_summary_gives_per_round_ratios_and_their_spread(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(mp.ROOT, "experiments"))
    import compare

    rounds = [
        {"this": {"sps": 110, "compile_s": 2.0}, "other": {"sps": 100, "compile_s": 4.0},
         "this_core": 0, "other_core": 1},
        {"this": {"sps": 90, "compile_s": 3.0}, "other": {"sps": 100, "compile_s": 3.0},
         "this_core": 1, "other_core": 0},
    ]
    summary = compare.summarize(rounds)
    assert summary["sps_ratio"] == {"per_round": [1.1, 0.9], "mean": 1.0, "min": 0.9, "max": 1.1}
    assert summary["compile_ratio"]["per_round"] == [0.5, 1.0]
    assert summary["compile_ratio"]["mean"] == 0.75
    assert [(r["this_core"], r["other_core"]) for r in summary["rounds"]] == [(0, 1), (1, 0)]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pairs need 2 cores")
def test_two_paired_rounds_swap_cores(background):
    result = background.result("compare/self")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["round 1", "round 2"]
    summary = json.loads(lines[-1])
    assert [(r["this_core"], r["other_core"]) for r in summary["rounds"]] == [(0, 1), (1, 0)]
    assert summary["other"] == os.path.abspath(mp.ROOT) == summary["this"]
    for r in summary["rounds"]:
        assert r["this_sps"] > 0 and r["other_sps"] > 0
    assert summary["sps_ratio"]["min"] <= summary["sps_ratio"]["mean"] <= summary[
        "sps_ratio"]["max"]
    assert "--compare_with" not in " ".join(summary["args"])
    assert "--total_steps=512" in summary["args"]


@pytest.mark.parametrize("args, message", COMPARE_BAD_INPUTS)
def test_compare_bad_inputs(args, message):
    proc = mp.start(BENCHMARK, args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().startswith(f"error: {message}"), err


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a core to take away")
def test_compare_on_one_core_is_an_error(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(mp.ROOT, "experiments"))
    import sweep

    argv = sweep.pinned([sys.executable, BENCHMARK, "--compare_with=."],
                        min(os.sched_getaffinity(0)))
    proc = subprocess.Popen(argv, env=mp.child_env(1), cwd=mp.ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == "error: --compare_with pins each version to its own core: needs 2 cores"
