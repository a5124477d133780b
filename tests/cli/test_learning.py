"""End-to-end learning: each agent's default command solves CartPole-v1 on CPU, on each
of three seeds (``slow``: ``python -m pytest -m slow tests/cli/test_learning.py``).

The default suite asserts that each learner learns with fewer runs: the default PPO
command solves CartPole (tests/test_policy.py, greedy >= 475 over 10 episodes), host
actors solve it with PPO, IMPALA and Ape-X's ``learn`` (tests/sebulba/test_host_actors.py),
and A2C's update equals IMPALA's with unit traces (tests/agents/). What only this module
checks is robustness over seeds at the default budgets.
"""

import json

import pytest

from jaxrl_dist import agents
from jaxrl_dist.cpu import compile_options
from tests.cli.test_cli import TRAIN, script_job

pytestmark = pytest.mark.slow


def background_runs(items, tmp_path_factory):
    """The selected agents' default commands, run in the background (see conftest)."""
    jobs = []
    for item in items:
        agent = item.callspec.params["agent"]
        workdir = tmp_path_factory.mktemp(f"learning_{agent}")
        jobs.append(script_job(("learning", agent), TRAIN, f"--workdir={workdir}",
                               f"--agent={agent}", "--num_seeds=3", "--compilation_cache=",
                               f"--chunk_compile={default_tier(agent)}", workdir=workdir))
    return jobs


def default_tier(agent: str) -> str:
    """The chunk tier of the one-seed default command, which three seeds' env steps could
    otherwise resolve differently (``--chunk_compile=auto`` counts all seeds)."""
    config = agents.default_config(agent, "CartPole-v1")
    steps = config.num_updates * config.steps_per_update
    return "quick" if steps <= compile_options.QUICK_CHUNK_MAX_ENV_STEPS else "optimized"


@pytest.mark.parametrize("agent,min_steps", [
    ("ppo", 490_000),  # README's main command: 5e5 env steps per seed
    ("impala", 990_000),  # 1e6 env steps per seed, policy lag 1
    ("a2c", 990_000),
    ("apex", 490_000),  # Ape-X DQN: 5e5 env steps per seed
])
def test_default_train_solves_cartpole_for_three_seeds(background, agent, min_steps):
    result = background.result(("learning", agent))
    assert result.returncode == 0, result.stderr
    workdir = background.job(("learning", agent))["workdir"]
    final = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert min_steps <= final["env_steps"] <= 1_000_000
    per_seed = final["eval/episode_return_per_seed"]
    assert len(per_seed) == 3
    assert min(per_seed) >= 475, per_seed
    assert final["chunk_tier"] == default_tier(agent)
