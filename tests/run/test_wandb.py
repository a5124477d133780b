"""Weights & Biases logging: optional, asked for by a flag, driven from the host loop."""

import sys
import threading
import types

import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.run import writers
from tests import multiprocess as mp

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


class FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.finished, self.threads = init, [], False, set()

    def log(self, data, step):
        self.threads.add(threading.get_ident())
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []
    module = types.ModuleType("wandb")
    module.init = lambda **kw: runs.append(FakeRun(**kw)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def test_a_run_logs_every_record_to_wandb_from_the_host_loop(tmp_path, fake_wandb):
    config = agents.default_config("a2c", "CartPole-v1", num_envs=4, total_steps=4 * 5 * 8)
    settings = training.RunSettings(eval_episodes=2, log_points=4, progress_every_s=1e9,
                                    wandb_project="jaxrl-dist-test")
    training.train(config, settings, str(tmp_path / "run"), log=lambda s: None)
    (run,) = fake_wandb
    assert run.init["project"] == "jaxrl-dist-test" and run.init["config"]["agent"] == "a2c"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(run.logged) == len(lines)  # every log point and the summary
    steps = [step for step, _ in run.logged]
    assert steps == sorted(steps) and steps[-1] == 160
    assert all("sps" in data and "loss/total" in data for _, data in run.logged[:-1])
    # NaN (no episode finished yet) is left out, as in TensorBoard.
    assert any("train/episode_return" in data for _, data in run.logged)
    assert "eval/episode_return" in run.logged[-1][1]
    assert run.threads == {threading.get_ident()} and run.finished


def test_wandb_flag_without_wandb_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(errors.ConfigError, match="--wandb_project needs the wandb package"):
        writers.check_wandb("p")
    (tmp_path / "shadow").mkdir()  # an importable "wandb" that fails like a missing one
    (tmp_path / "shadow" / "wandb.py").write_text("raise ImportError('not installed')\n")
    proc = mp.start(mp.TRAIN, ["--wandb_project=p", f"--workdir={tmp_path}"],
                    env_extra={"PYTHONPATH": str(tmp_path / "shadow")})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().startswith("error: --wandb_project needs the wandb package")
    assert not (tmp_path / "metrics.jsonl").exists()
