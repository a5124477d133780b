"""End-to-end learning: the default command solves CartPole-v1 on CPU."""

import json

from test_cli import TRAIN, run_script


def test_default_train_solves_cartpole_for_three_seeds(tmp_path):
    # Exactly the README's main command, plus 3 seeds vmapped in one program.
    result = run_script(TRAIN, f"--workdir={tmp_path}", "--num_seeds=3", "--compilation_cache=")
    assert result.returncode == 0, result.stderr
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["env_steps"] >= 490_000  # 5e5 env steps per seed
    per_seed = final["eval/episode_return_per_seed"]
    assert len(per_seed) == 3
    assert min(per_seed) >= 475, per_seed
