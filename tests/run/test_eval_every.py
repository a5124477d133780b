"""Greedy evaluation during training (``RunSettings.eval_every``): which log points
evaluate, with which parameters, where the returns are logged (history, metrics.jsonl,
progress_fn, the learning curve), and that evaluation time stays out of ``sps`` and
``train_s``; on device (gymnax) and with host actors (Gymnasium)."""

import json
import time

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.run import shell, writers
from jaxrl_dist.run.settings import RunSettings
from jaxrl_dist.sebulba import training as host_training

EVAL_KEYS = ("eval/episode_return", "eval/episode_return_per_seed", "time/eval_s")


def eval_records(history):
    return [h for h in history if "eval/episode_return" in h]


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("bad", [-1, -100, 1.5, True, "10", None])
def test_a_bad_eval_every_is_a_one_line_config_error(bad):
    with pytest.raises(errors.ConfigError) as e:
        RunSettings(eval_every=bad).check()
    assert str(e.value) == f"--eval_every must be an integer >= 0, got {bad!r}"
    assert "\n" not in str(e.value)


def test_eval_due_is_the_first_log_point_at_or_after_each_multiple_and_the_last():
    settings = RunSettings(eval_every=150)
    windows = [(s - 64, s) for s in range(64, 1025, 64)]  # log points every 64 env steps
    due = [s for before, s in windows if settings.eval_due(before, s, 1024)]
    assert due == [192, 320, 512, 640, 768, 960, 1024]
    assert not any(RunSettings(eval_every=0).eval_due(a, b, 1024) for a, b in windows)
    # A log point past two multiples evaluates once; one at a multiple evaluates.
    assert RunSettings(eval_every=10).eval_due(5, 35, 100)
    assert RunSettings(eval_every=10).eval_due(19, 20, 100)
    assert not RunSettings(eval_every=10).eval_due(20, 29, 100)


# --------------------------------------------------- the shell, with a fake path
class FakePath:
    """A pure-Python ``shell.ActingPath``: ``num_updates`` updates of ``update_s`` seconds,
    a log point after each, its own ``sps`` clock (as the real paths keep one), an
    evaluation that takes ``eval_s`` seconds and returns the update count."""

    title, primary, saves_on_interrupt, identity, config = "fake", True, False, {}, None

    def __init__(self, num_updates=6, steps_per_update=10, num_seeds=2, update_s=0.05,
                 eval_s=0.3, bad_update=None):
        self.num_updates, self.steps_per_update, self.num_seeds = (
            num_updates, steps_per_update, num_seeds)
        self.update_s, self.eval_s, self.bad_update = update_s, eval_s, bad_update
        self.newest_updates = 0
        self.evaluated_at: list[int] = []

    def memory_parts(self):
        return [], jax.devices()[0], {}

    def chunk(self, start_update):
        return 1

    def prepare(self, start_update, every, saving):
        return {"compile_s": 0.0}

    def log_points(self, start_update, every):
        last = time.time()
        for u in range(start_update, self.num_updates):
            time.sleep(self.update_s)
            self.newest_updates = u + 1
            now = time.time()
            steps = self.steps_per_update * self.num_seeds
            record = {"env_steps": (u + 1) * self.steps_per_update,
                      "sps": steps / (now - last), "train/episode_return": float(u)}
            last = now
            yield shell.LogPoint(u + 1, record, u + 1 == self.num_updates)

    def pending(self):
        return []

    def check_finite(self, point, where):
        if point.updates == self.bad_update:
            raise errors.NonFiniteError(f"NaN at update {point.updates}; {where}")

    def checkpoint_meta(self):
        return {}

    def close(self):
        pass

    def failure_params(self, nonfinite):
        return None

    def evaluate(self):
        self.evaluated_at.append(self.newest_updates)
        time.sleep(self.eval_s)
        return np.full((self.num_seeds, 3), float(self.newest_updates))

    def final_params(self):
        params = {"w": np.zeros(2, np.float32)}
        return params, params

    def summary_extras(self, run_steps):
        return {}

    def done_text(self, summary):
        return "fake"

    def curve(self, history):
        return np.array([[h["train/episode_return"]] * self.num_seeds for h in history])


def test_the_shell_evaluates_due_log_points_once_and_keeps_eval_time_out_of_sps():
    path, seen = FakePath(), []
    summary = shell.run(path, RunSettings(eval_every=25), None, log=lambda s: None,
                        progress_fn=lambda steps, metrics: seen.append((steps, dict(metrics))))
    # Multiples 25 and 50: first log points at/after them are 30 and 50; 60 is the last.
    assert path.evaluated_at == [3, 5, 6]  # the final evaluation is the last log point's
    evals = eval_records(summary["history"])
    assert [h["env_steps"] for h in evals] == [30, 50, 60]
    for h in evals:
        np.testing.assert_array_equal(h["eval/episode_return_per_seed"],
                                      [h["env_steps"] / 10] * 2)
        assert h["eval/episode_return"] == h["env_steps"] / 10
        assert h["time/eval_s"] >= 0.3
    assert [s for s, m in seen if "eval/episode_return" in m] == [30, 50, 60]
    assert summary["eval/episode_return"] == 6.0
    np.testing.assert_array_equal(summary["eval/returns"], np.full((2, 3), 6.0))
    # 20 env steps per 0.05 s update: 400 sps; with an evaluation's 0.3 s counted, ~57.
    for h in summary["history"]:
        assert h["sps"] > 200, (h["env_steps"], h["sps"])
    assert summary["eval_s"] == pytest.approx(sum(h["time/eval_s"] for h in evals))
    assert 0.3 <= summary["train_s"] < 0.3 + 0.3, summary["train_s"]
    assert summary["sps"] > 200


def test_without_eval_every_only_the_final_evaluation_is_made():
    path = FakePath(eval_s=0.0)
    summary = shell.run(path, RunSettings(), None, log=lambda s: None,
                        progress_fn=lambda steps, metrics: None)
    assert path.evaluated_at == [6]  # after training, not in any record
    assert not eval_records(summary["history"])
    assert not any(k in h for h in summary["history"] for k in EVAL_KEYS)
    assert summary["eval_s"] == 0.0 and summary["eval/episode_return"] == 6.0


def test_a_non_finite_log_point_is_logged_but_not_evaluated():
    path, seen = FakePath(eval_s=0.0, bad_update=3), []
    with pytest.raises(errors.NonFiniteError):
        shell.run(path, RunSettings(eval_every=25), None, log=lambda s: None,
                  progress_fn=lambda steps, metrics: seen.append((steps, dict(metrics))))
    assert path.evaluated_at == []
    assert seen[-1][0] == 30 and "eval/episode_return" not in seen[-1][1]


# ---------------------------------------------------------------------- plot
def test_the_learning_curve_draws_the_eval_series_as_a_dashed_line():
    history = [
        {"env_steps": 100, "eval/episode_return_per_seed": [10.0, 20.0]},
        {"env_steps": 200},
        {"env_steps": 300, "eval/episode_return_per_seed": [None, 40.0]},  # JSON NaN
        {"env_steps": 400, "eval/episode_return_per_seed": [50.0, 70.0]},
    ]
    steps, returns = writers.eval_series(history)
    np.testing.assert_array_equal(steps, [100, 300, 400])
    assert returns.shape == (3, 2) and np.isnan(returns[1, 0])
    fig = writers.learning_curve_figure(
        np.array([100, 200, 300, 400]), np.arange(8.0).reshape(4, 2), "t",
        eval_returns=np.array([50.0, 70.0]), eval_step=400, periodic_eval=(steps, returns),
    )
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label() == writers.PERIODIC_EVAL_LABEL]
    x, y = line.get_data()
    np.testing.assert_array_equal(x, [100, 300, 400])
    np.testing.assert_array_equal(y, [15.0, 40.0, 60.0])  # mean over the finite seeds
    assert line.get_linestyle() == "--" and line.get_marker() == "s"
    assert writers.PERIODIC_EVAL_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    # No evaluation during training: no series line.
    empty = writers.learning_curve_figure(
        np.array([100, 200]), np.ones((2, 1)), "t", periodic_eval=writers.eval_series([]))
    assert not [ln for ln in empty.axes[0].lines
                if ln.get_label() == writers.PERIODIC_EVAL_LABEL]


# ------------------------------------------------------------- the real paths
def update_steps_at_evaluation(monkeypatch, path_class):
    """Records the learner state's update count each time ``path_class.evaluate`` runs."""
    seen = []
    original = path_class.evaluate

    def evaluate(self):
        seen.append(int(np.max(jax.device_get(self.state.update_step))))
        return original(self)

    monkeypatch.setattr(path_class, "evaluate", evaluate)
    return seen


def check_run_files(workdir, summary, expected_steps, num_seeds):
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    records, final = lines[:-1], lines[-1]
    evals = eval_records(records)
    assert [r["env_steps"] for r in evals] == expected_steps
    for r in evals:
        assert len(r["eval/episode_return_per_seed"]) == num_seeds
        assert r["eval/episode_return"] == pytest.approx(
            np.mean(r["eval/episode_return_per_seed"]))
        assert r["time/eval_s"] > 0
    # The last log point's evaluation is the final one (made once).
    assert final["eval/episode_return"] == pytest.approx(evals[-1]["eval/episode_return"])
    assert final["eval_s"] == pytest.approx(sum(r["time/eval_s"] for r in evals))
    assert final["train_s"] > 0 and (workdir / "learning_curve.png").exists()
    assert [h["env_steps"] for h in eval_records(summary["history"])] == expected_steps


@pytest.mark.usefixtures("fast_compile")  # a few tiny updates: compile-bound
def test_on_device_run_evaluates_each_log_point_s_own_parameters(tmp_path, monkeypatch):
    at_eval = update_steps_at_evaluation(monkeypatch, training.OnDevicePath)
    config = agents.default_config(  # 64 env steps per update, 8 updates, chunks of 1
        "ppo", "CartPole-v1", num_envs=4, rollout_len=16, total_steps=512,
        num_minibatches=2, num_epochs=1,
    )
    settings = RunSettings(num_seeds=2, eval_episodes=2, log_points=8, eval_every=150,
                           progress_every_s=1e9)
    seen = []
    summary = training.train(config, settings, str(tmp_path), log=lambda s: None,
                             progress_fn=lambda steps, m: seen.append((steps, dict(m))))
    expected = [192, 320, 512]  # at/after 150, 300, 450; 512 is also the last
    # Each evaluation saw that log point's state, not the next chunk's.
    assert at_eval == [s // 64 for s in expected]
    assert [s for s, m in seen if "eval/episode_return" in m] == expected
    check_run_files(tmp_path, summary, expected, num_seeds=2)
    np.testing.assert_array_equal(
        summary["eval/episode_return_per_seed"],
        eval_records(summary["history"])[-1]["eval/episode_return_per_seed"])


@pytest.mark.usefixtures("fast_compile")  # a few tiny updates: compile-bound
def test_host_actor_run_evaluates_each_log_point_s_own_parameters(tmp_path, monkeypatch):
    at_eval = update_steps_at_evaluation(monkeypatch, host_training.HostPath)
    config = agents.default_config(  # 2 threads x 3 envs x 16 steps: 96 per update, 8 updates
        "ppo", "gymnasium:CartPole-v1", rollout_len=16, total_steps=96 * 8,
        num_minibatches=2, num_epochs=1,
    )
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=3, learner_devices=(0,))
    settings = RunSettings(eval_episodes=2, log_points=8, eval_every=200, progress_every_s=1e9)
    seen = []
    summary = host_training.train_host(
        config, settings, host, str(tmp_path), log=lambda s: None,
        progress_fn=lambda steps, m: seen.append((steps, dict(m))))
    expected = [288, 480, 672, 768]  # at/after 200, 400, 600; 768 is the last
    assert at_eval == [s // 96 for s in expected]
    assert [s for s, m in seen if "eval/episode_return" in m] == expected
    check_run_files(tmp_path, summary, expected, num_seeds=1)
