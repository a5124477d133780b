"""experiments/replay_benchmark.py at a tiny size: every reported rate is finite and positive."""

import importlib.util
import math
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "replay_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("replay_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(bench, **kw):
    return bench.Config(capacity=4096, batch_size=64, add_batch=64, iters=3, repeats=1,
                        check_draws=2, **kw)


def check(result, cfg):
    assert set(result["ops"]) == {"add", "sample", "update", "learner_step"}
    for r in result["ops"].values():
        for key in ("ops_per_s", "items_per_s", "ms_per_op", "compile_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    assert result["ops"]["add"]["items_per_s"] == pytest.approx(
        result["ops"]["add"]["ops_per_s"] * cfg.add_batch)
    assert result["zero_priority_draws"] == 0
    assert result["draws_checked"] == 2 * cfg.batch_size


def test_ours_at_a_tiny_capacity(bench):
    cfg = tiny(bench, item="cartpole")
    result = bench.run_benchmark(cfg, ["ours"])["ours"]
    check(result, cfg)
    assert result["slots"] == 4096


def test_flashbax_at_a_tiny_capacity(bench):
    pytest.importorskip("flashbax")
    cfg = tiny(bench, item="cartpole")
    result = bench.run_benchmark(cfg, ["flashbax"])["flashbax"]
    check(result, cfg)


def test_a_missing_flashbax_is_skipped_with_the_install_hint(bench, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "flashbax", None)  # import -> ImportError
    result = bench.run_benchmark(tiny(bench), ["flashbax"])
    assert 'pip install -e ".[bench]"' in result["flashbax"]["skipped"]
