"""End-to-end learning: each agent's default command solves CartPole-v1 on CPU.

In the default suite with one seed (IMPALA, A2C and Ape-X here; PPO's default command:
tests/test_policy.py, greedy >= 475 over 10 episodes); on each of three seeds in one
program (robustness over seeds at the default budgets) under ``slow``:
``python -m pytest -m slow tests/cli/test_learning.py``.
"""

import json

import pytest

from jaxrl_dist import agents
from jaxrl_dist.cpu import compile_options
from tests.cli.test_cli import TRAIN, script_job


def background_runs(items, tmp_path_factory):
    """The selected agents' default commands, run in the background (see conftest)."""
    jobs = []
    for item in items:
        agent = item.callspec.params["agent"]
        seeds = 3 if item.originalname.endswith("three_seeds") else 1
        workdir = tmp_path_factory.mktemp(f"learning_{agent}_{seeds}")
        jobs.append(script_job(("learning", agent, seeds), TRAIN, f"--workdir={workdir}",
                               f"--agent={agent}", f"--num_seeds={seeds}",
                               "--compilation_cache=",
                               f"--chunk_compile={default_tier(agent)}", workdir=workdir))
    return jobs


def default_tier(agent: str) -> str:
    """The chunk tier of the one-seed default command, which three seeds' env steps could
    otherwise resolve differently (``--chunk_compile=auto`` counts all seeds)."""
    config = agents.default_config(agent, "CartPole-v1")
    steps = config.num_updates * config.steps_per_update
    return "quick" if steps <= compile_options.QUICK_CHUNK_MAX_ENV_STEPS else "optimized"


MIN_STEPS = {
    "ppo": 490_000,  # README's main command: 5e5 env steps per seed
    "impala": 990_000,  # 1e6 env steps per seed, policy lag 1
    "a2c": 990_000,
    "apex": 490_000,  # Ape-X DQN: 5e5 env steps per seed
}


def check_solved(background, agent, seeds):
    key = ("learning", agent, seeds)
    result = background.result(key)
    assert result.returncode == 0, result.stderr
    final = json.loads((background.job(key)["workdir"] / "metrics.jsonl").read_text()
                       .splitlines()[-1])
    assert MIN_STEPS[agent] <= final["env_steps"] <= 1_000_000
    per_seed = final["eval/episode_return_per_seed"]
    assert len(per_seed) == seeds
    assert min(per_seed) >= 475, per_seed
    assert final["chunk_tier"] == default_tier(agent)


@pytest.mark.parametrize("agent", ["impala", "a2c", "apex"])
def test_default_train_solves_cartpole(background, agent):
    check_solved(background, agent, 1)


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(MIN_STEPS))
def test_default_train_solves_cartpole_for_three_seeds(background, agent):
    check_solved(background, agent, 3)
