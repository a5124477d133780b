"""The Python API (``jaxrl_dist.make_config``, ``jaxrl_dist.train``) on both acting paths,
and environments of a user's own: a gymnax ``Environment`` object, a Gymnasium env by
``module:Id`` and by ``--env_module``."""

import json
import os

import custom_envs
import pytest

import jaxrl_dist
from jaxrl_dist import errors
from tests.cli.test_cli import ROOT, TRAIN, script_env

QUIET = dict(eval_episodes=4, log_points=4, progress_every_s=1e9)


def test_on_device_with_a_progress_callback():
    config = jaxrl_dist.make_config("ppo", "CartPole-v1", total_steps=2100, num_envs=8,
                                    rollout_len=32)
    calls, lines = [], []
    result = jaxrl_dist.train(config, num_devices=1, log=lines.append,
                              progress_fn=lambda steps, metrics: calls.append((steps, metrics)),
                              **QUIET)
    assert lines[0] == ("total_steps=2100 is rounded down to 2048 env steps per seed "
                        "(8 updates of 256)")  # as the command line says it
    assert [steps for steps, _ in calls] == [512, 1024, 1536, 2048]
    assert all("train/episode_return" in metrics for _, metrics in calls)
    assert result.workdir is None and len(result.history) == 4
    assert result.summary["env_steps"] == 2048 and len(result.summary["params_sha256"]) == 64
    assert set(result.params) == {"policy", "value"}  # leading seed axis of 1
    assert {x.shape[0] for x in jax_leaves(result.params)} == {1}


def test_host_actors_with_a_progress_callback(tmp_path):
    config = jaxrl_dist.make_config("ppo", "gymnasium:CartPole-v1", total_steps=2048,
                                    rollout_len=32)
    calls = []
    result = jaxrl_dist.train(
        config, workdir=str(tmp_path), actor_threads=1, envs_per_thread=8,
        learner_devices=(0,), deterministic=True, log=lambda s: None,
        progress_fn=lambda steps, metrics: calls.append(steps), **QUIET)
    assert calls == [512, 1024, 1536, 2048]
    assert result.workdir == str(tmp_path)
    with open(tmp_path / "metrics.jsonl") as f:
        assert json.loads(f.read().splitlines()[-1])["params_sha256"] == \
            result.summary["params_sha256"]
    # The workdir holds a run now: refused as the command line refuses it, before
    # anything is built; overwrite=True replaces it (one run's lines in metrics.jsonl).
    first = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(config, workdir=str(tmp_path), actor_threads=1, envs_per_thread=8,
                         learner_devices=(0,), deterministic=True, log=lambda s: None, **QUIET)
    assert str(info.value) == (
        f"--workdir={tmp_path} already holds a run (metrics.jsonl records or checkpoints); "
        "choose a new --workdir, pass --overwrite, or --resume it")
    assert (tmp_path / "metrics.jsonl").read_text() == first
    with pytest.raises(errors.ConfigError, match="cannot be combined with --overwrite"):
        jaxrl_dist.train(config, workdir=str(tmp_path), resume=True, overwrite=True)
    again = jaxrl_dist.train(
        config, workdir=str(tmp_path), actor_threads=1, envs_per_thread=8, overwrite=True,
        learner_devices=(0,), deterministic=True, log=lambda s: None, **QUIET)
    assert again.summary["params_sha256"] == result.summary["params_sha256"]
    assert (tmp_path / "metrics.jsonl").read_text().count("params_sha256") == 1


def test_a_custom_gymnax_env_object_learns():
    config = jaxrl_dist.make_config("ppo", custom_envs.Corridor(), total_steps=32_768,
                                    num_envs=16, rollout_len=32)
    assert config.env == "Corridor"
    result = jaxrl_dist.train(config, num_devices=1, log=lambda s: None, **QUIET)
    assert result.summary["eval/episode_return"] >= 0.9  # 9 steps right: 1 - 8 * 0.01


def test_a_custom_gymnasium_env_by_module_id_learns():
    config = jaxrl_dist.make_config("ppo", "gymnasium:custom_envs:GoRight-v0",
                                    total_steps=32_768, rollout_len=32)
    result = jaxrl_dist.train(config, actor_threads=2, envs_per_thread=8,
                              learner_devices=(0,), log=lambda s: None, **QUIET)
    assert result.summary["eval/episode_return"] >= 0.9


def test_a_gymnasium_env_factory_runs_with_threads(tmp_path):
    config = jaxrl_dist.make_config("a2c", custom_envs.GoRight, total_steps=1024,
                                    rollout_len=16)
    assert config.env == "gymnasium:jaxrl_dist/GoRight-v0"
    result = jaxrl_dist.train(config, actor_threads=1, envs_per_thread=4,
                              learner_devices=(0,), log=lambda s: None, **QUIET)
    assert result.summary["env_steps"] == 1024
    # A lambda (which does not pickle) with checkpoints: the actors' env state is not
    # captured (a resume starts their envs afresh), the run goes on.
    config = jaxrl_dist.make_config("a2c", lambda: custom_envs.GoRight(), total_steps=1024,
                                    rollout_len=16)
    result = jaxrl_dist.train(config, workdir=str(tmp_path), actor_threads=1,
                              envs_per_thread=4, learner_devices=(0,), checkpoint_every=8,
                              log=lambda s: None, **QUIET)
    assert result.summary["env_steps"] == 1024
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["16", "8"]
    with pytest.raises(errors.ConfigError, match="register the env in a module"):
        jaxrl_dist.train(config, ray_actors=2, envs_per_thread=4, log=lambda s: None)


def test_api_bad_input_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="--clip_eps does not apply to --agent=a2c"):
        jaxrl_dist.make_config("a2c", "CartPole-v1", clip_eps=0.1)
    with pytest.raises(errors.ConfigError, match="--lr must be > 0"):
        jaxrl_dist.make_config("ppo", "CartPole-v1", lr=-1.0)
    with pytest.raises(errors.ConfigError, match="apex acts in Discrete"):
        jaxrl_dist.make_config("apex", "Pendulum-v1")
    for sizes in [(64, "a"), (64, True), (64.0,), "64", (64, 0)]:
        with pytest.raises(errors.ConfigError) as info:
            jaxrl_dist.make_config("ppo", "CartPole-v1", hidden_sizes=sizes)
        assert str(info.value) == f"--hidden_sizes must be positive integers, got {sizes!r}"
    config = jaxrl_dist.make_config("ppo", "CartPole-v1")
    with pytest.raises(errors.ConfigError, match="unknown setting.*actor_thread"):
        jaxrl_dist.train(config, actor_thread=2)
    with pytest.raises(errors.ConfigError, match=r"^--actor_threads applies only to host actors"):
        jaxrl_dist.train(config, actor_threads=2)


# The rules the command line and the API share, with the command line's words
# (tests/cli/test_cli.py's BAD_INPUTS), each refused before anything is built.
SHARED_RULES = [
    (dict(agent="sac", env="CartPole-v1"), "--agent must be one of ppo, impala, a2c"),
    (dict(agent="apex", env="Pendulum-v1"), "--agent=apex acts in Discrete action spaces"),
    (dict(agent="a2c", env="CartPole-v1", clip_eps=0.3),
     "--clip_eps does not apply to --agent=a2c"),
    (dict(agent="ppo", env="CartPole-v1", torso="cnn"),
     "--torso=cnn needs image observations [H, W, C]; --env=CartPole-v1"),
    (dict(agent="ppo", env="CartPole-v1", num_envs=-4), "--num_envs must be > 0, got -4"),
    (dict(agent="ppo", env="CartPole-v1", total_steps=0), "--total_steps must be > 0, got 0"),
]


@pytest.mark.parametrize(("args", "message"), SHARED_RULES)
def test_make_config_refuses_as_the_command_line_does(args, message):
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.make_config(**args)
    assert str(info.value).startswith(message), str(info.value)


def test_train_refuses_a3c_without_workers_and_host_seeds_as_the_command_line_does():
    from jaxrl_dist import agents

    on_device = jaxrl_dist.make_config("a3c", "CartPole-v1")
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(on_device, log=lambda s: None)
    assert str(info.value) == agents.NEEDS_WORKERS.format(agent="a3c")
    host = jaxrl_dist.make_config("a3c", "gymnasium:CartPole-v1")
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(host, actor_threads=1, log=lambda s: None)
    assert str(info.value) == agents.NEEDS_WORKERS.format(agent="a3c")
    with pytest.raises(errors.ConfigError, match="^--deterministic does not apply to --agent=a3c"):
        jaxrl_dist.train(host, ray_actors=2, deterministic=True, log=lambda s: None)
    ppo = jaxrl_dist.make_config("ppo", "gymnasium:CartPole-v1")
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(ppo, num_seeds=2, log=lambda s: None)
    assert str(info.value) == (
        "--num_seeds must be 1 with host actors (--env=gymnasium:CartPole-v1), got 2")


def test_resume_checks_the_workdir_s_config_json_before_anything_is_built(tmp_path):
    from jaxrl_dist import api
    from jaxrl_dist.run import config_file

    config = jaxrl_dist.make_config("ppo", "CartPole-v1", total_steps=2048, num_envs=8,
                                    rollout_len=32)
    empty = tmp_path / "empty"
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(config, workdir=str(empty), resume=True)
    assert str(info.value) == f"--resume: {empty} holds no run (no config.json)"
    assert not empty.exists()
    config_file.write(str(tmp_path), config, agent="ppo", seed=0, num_seeds=1)
    api.check(config, workdir=str(tmp_path), resume=True)  # the same run
    with pytest.raises(errors.ConfigError) as info:
        jaxrl_dist.train(config, workdir=str(tmp_path), resume=True, seed=3)
    assert str(info.value) == (f"--resume: the run in {tmp_path} has seed=0, the flags give 3; "
                               "resume with the same settings")
    # Host actors: compared as the host path runs it (num_envs from the layout).
    host = jaxrl_dist.make_config("ppo", "gymnasium:CartPole-v1", total_steps=2048,
                                  rollout_len=32)
    layout = dict(actor_threads=1, envs_per_thread=8, learner_devices=(0,))
    from jaxrl_dist.sebulba import training as host_training

    runs_as = host_training.host_config(host, host_training.HostSettings(**layout).resolve(4))
    config_file.write(str(tmp_path), runs_as, agent="ppo", seed=0, num_seeds=1)
    api.check(host, workdir=str(tmp_path), resume=True, **layout)
    with pytest.raises(errors.ConfigError, match="has num_envs=8, the flags give 16"):
        api.check(host, workdir=str(tmp_path), resume=True,
                             **dict(layout, envs_per_thread=16))


def test_env_module_and_module_id_on_the_command_line():
    import subprocess
    import sys

    env = script_env(1)  # custom_envs.py from the current directory, as python -m finds it
    here = os.path.join(ROOT, "tests")
    by_module = subprocess.run(
        [sys.executable, TRAIN, "--env_module=custom_envs", "--env=gymnasium:GoRight-v0",
         "--print_config"], capture_output=True, text=True, env=env, timeout=120, cwd=here)
    assert by_module.returncode == 0, by_module.stderr
    note, *rest = by_module.stdout.splitlines()
    assert note == ("--env_module=custom_envs registers GoRight-v0: the run uses "
                    "--env=gymnasium:custom_envs:GoRight-v0")
    assert json.loads("\n".join(rest))["env"] == "gymnasium:custom_envs:GoRight-v0"
    by_id = subprocess.run(
        [sys.executable, TRAIN, "--env=gymnasium:custom_envs:GoRight-v0", "--print_config"],
        capture_output=True, text=True, env=env, timeout=120, cwd=here)
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["env"].endswith("GoRight-v0")


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
