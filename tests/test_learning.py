"""End-to-end learning: each agent's default command solves CartPole-v1 on CPU."""

import json

import pytest
from test_cli import TRAIN, run_script


@pytest.mark.parametrize("agent,min_steps", [
    ("ppo", 490_000),  # README's main command: 5e5 env steps per seed
    ("impala", 990_000),  # 1e6 env steps per seed, policy lag 1
    ("a2c", 990_000),
    ("apex", 490_000),  # Ape-X DQN: 5e5 env steps per seed
])
def test_default_train_solves_cartpole_for_three_seeds(tmp_path, agent, min_steps):
    result = run_script(TRAIN, f"--workdir={tmp_path}", f"--agent={agent}", "--num_seeds=3",
                        "--compilation_cache=")
    assert result.returncode == 0, result.stderr
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert min_steps <= final["env_steps"] <= 1_000_000
    per_seed = final["eval/episode_return_per_seed"]
    assert len(per_seed) == 3
    assert min(per_seed) >= 475, per_seed
