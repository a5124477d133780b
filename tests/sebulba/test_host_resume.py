"""Checkpoint and resume of host-actor (Sebulba) runs: learner state, the behaviour
parameters and every actor thread's PRNG key and env state; a killed deterministic run
resumed ends where an uninterrupted run ends, bit for bit."""

import dataclasses
import json
import os
import shutil
import signal
import time

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv
from gymnasium.utils import EzPickle

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.run import checkpoint
from jaxrl_dist.sebulba import checkpoint as host_checkpoint
from jaxrl_dist.sebulba import training as host_training
from tests import multiprocess as mp

SKIP = {"wall_s", "sps", "compile_s", "train_s", "actor_env_steps"}  # timing-dependent


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [
            {k: v for k, v in json.loads(line).items()
             if k not in SKIP and not k.startswith("time/")}
            for line in f
        ]


ARGS = ["--env=gymnasium:CartPole-v1", "--actor_threads=2", "--envs_per_thread=4",
        "--rollout_len=16", "--total_steps=7680", "--num_minibatches=2", "--num_epochs=2",
        "--deterministic", "--checkpoint_every=5", "--log_points=12", "--eval_episodes=2"]


def test_sigkilled_host_actor_run_resumed_matches_an_uninterrupted_run(tmp_path):
    """60 updates of 2 threads x 4 CartPoles, a checkpoint every 5; the victim is killed
    once one exists at update >= 10."""
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    args = [*ARGS, f"--compilation_cache={tmp_path / 'xla'}"]
    reference = mp.start(mp.TRAIN, [*args, f"--workdir={full}"])
    victim = mp.start(mp.TRAIN, [*args, f"--workdir={killed}"])
    ckpts = os.path.join(killed, "checkpoints")

    def saved():
        return [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []

    deadline = time.time() + 300
    while not any(step >= 10 for step in saved()):
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[1][-2000:]
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    latest = max(saved())
    assert latest < 60, "the run finished before it was killed"

    resumed = mp.start(mp.TRAIN, [*args, f"--workdir={killed}", "--resume"])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    _, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err[-3000:]
    assert f"resumed at update {latest}" in out
    a, b = records(full), records(killed)
    assert len(a) == 13 and a[-1]["env_steps"] == 7680
    assert a[-1]["params_sha256"] == b[-1]["params_sha256"]
    assert a == b  # every log line (losses, returns, lags) and the summary, bit for bit
    assert checkpoint.params_sha256(checkpoint.load_params(os.path.join(killed, "checkpoint"))) \
        == a[-1]["params_sha256"]

    # Another layout with as many envs: refused before compiling, one line, exit 2.
    other = mp.start(mp.TRAIN, [*args, f"--workdir={killed}", "--resume",
                                "--actor_threads=4", "--envs_per_thread=2"])
    _, err = other.communicate(timeout=120)
    assert other.returncode == 2
    assert err.strip().splitlines() == [
        f"error: --resume: the checkpoint in {killed} was made with host actor_threads=2 "
        "(now 4), envs_per_thread=4 (now 2)"
    ]


QUIET = training.RunSettings(eval_episodes=2, log_points=4, progress_every_s=1e9,
                             checkpoint_every=8)


@pytest.mark.usefixtures("fast_compile")
def test_apex_host_resume_restores_replay_and_actors_and_checks_the_layout(
        tmp_path, monkeypatch):
    config = agents.default_config(
        "apex", "gymnasium:CartPole-v1", rollout_len=4, total_steps=24 * 32,
        learning_starts=64, batch_size=16, buffer_capacity=512,
    )
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=4, deterministic=True,
                                      learner_devices=(1, 2))
    full = host_training.train_host(config, QUIET, host, str(tmp_path / "full"),
                                    log=lambda s: None)
    assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == ["16", "24"]
    for name in ("cut", "fresh_envs"):  # as if killed between the saves at 16 and 24
        shutil.copytree(tmp_path / "full", tmp_path / name)
        shutil.rmtree(tmp_path / name / "checkpoints" / "24")
    resume = dataclasses.replace(QUIET, resume=True)
    resumed = host_training.train_host(config, resume, host, str(tmp_path / "cut"),
                                       log=lambda s: None)
    assert resumed["resumed_from"] == 16
    assert resumed["params_sha256"] == full["params_sha256"]  # replay, Adam, keys, envs
    assert records(tmp_path / "cut") == records(tmp_path / "full")

    # Envs whose state was not captured (async, EzPickle) restart with fresh episodes
    # (other seeds): the run goes on, from other data.
    decode = host_checkpoint.decode_actor_states
    monkeypatch.setattr(host_checkpoint, "decode_actor_states", lambda encoded: [
        state._replace(env_state=None) for state in decode(encoded)
    ])
    fresh = host_training.train_host(config, resume, host, str(tmp_path / "fresh_envs"),
                                     log=lambda s: None)
    assert fresh["resumed_from"] == 16 and fresh["env_steps"] == 24 * 32
    assert fresh["params_sha256"] != full["params_sha256"]

    other = dataclasses.replace(host, actor_threads=4, envs_per_thread=2)  # as many envs
    with pytest.raises(errors.ConfigError, match=r"checkpoint in .* was made with host "
                       r"actor_threads=2 \(now 4\), envs_per_thread=4 \(now 2\)$"):
        host_training.train_host(config, resume, other,
                                 str(tmp_path / "cut"), log=lambda s: None)
    with pytest.raises(errors.ConfigError, match="--resume: no checkpoint in"):
        host_training.train_host(config, resume, host, str(tmp_path / "none"),
                                 log=lambda s: None)


class _EzCartPole(CartPoleEnv, EzPickle):
    def __init__(self, **kwargs):
        CartPoleEnv.__init__(self, **kwargs)
        EzPickle.__init__(self, **kwargs)


def test_vector_env_state_round_trip_and_envs_it_cannot_capture():
    env = gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 4, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        env.step(rng.integers(0, 2, 4))
    copy = gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 4, seed=99)
    copy.set_state(env.get_state())
    np.testing.assert_array_equal(copy.obs, env.obs)
    for _ in range(200):  # across episode ends and resets (the envs' np_random)
        action = rng.integers(0, 2, 4)
        for a, b in zip(env.step(action), copy.step(action), strict=True):
            np.testing.assert_array_equal(a, b)
    assert env.pop_episode_sums() == copy.pop_episode_sums()
    with pytest.raises(ValueError, match="holds 4 envs"):
        gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 2, seed=0).set_state(env.get_state())

    # Envs that pickle by re-construction would come back fresh: not captured at all.
    gymnasium.register("EzCartPole-test", entry_point=_EzCartPole, max_episode_steps=500)
    try:
        ez = gymnasium_env.VectorEnv("gymnasium:EzCartPole-test", 2, seed=0)
        assert ez.get_state() is None
    finally:
        del gymnasium.registry["EzCartPole-test"]
