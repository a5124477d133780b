"""``tensorboard`` (the [tensorboard] extra, in the test extra too) reads a run's event
files: ``tensorboard --inspect --logdir <workdir>`` lists its scalars and steps."""

import os
import re
import shutil
import subprocess

import jaxrl_dist


def test_tensorboard_reads_a_runs_event_files(tmp_path):
    config = jaxrl_dist.make_config("ppo", "CartPole-v1", total_steps=1024, num_envs=8,
                                    rollout_len=32)
    jaxrl_dist.train(config, workdir=str(tmp_path), num_devices=1, eval_episodes=2,
                     log_points=4, log=lambda s: None)
    tensorboard = shutil.which("tensorboard") or os.path.join(
        os.path.dirname(os.sys.executable), "tensorboard")
    result = subprocess.run([tensorboard, "--inspect", "--logdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "train/episode_return" in out and "params_sha256" not in out  # scalars only
    assert re.search(r"last_step\s+1024", out) and re.search(r"first_step\s+256", out), out
