"""Host actors (Sebulba): layout on a mesh, determinism, faults, interrupts, learning.

The suite forces 4 CPU devices (conftest.py), so actor and learner devices can
be distinct here exactly as on a GPU machine.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import gymnasium
import jax
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.run import checkpoint
from jaxrl_dist.sebulba import training as host_training
from tests.cli.test_cli import script_job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUIET = training.RunSettings(eval_episodes=2, log_points=4, progress_every_s=1e9)


def small_config(agent, **overrides):
    values = dict(rollout_len=16, total_steps=6 * 16 * 5)
    if agent == "ppo":
        values.update(num_minibatches=2, num_epochs=2)
    values.update(overrides)
    return agents.default_config(agent, "gymnasium:CartPole-v1", **values)


def live_actor_threads():
    return [t for t in threading.enumerate() if t.name.startswith("actor-") and t.is_alive()]


def assert_replicated_on(params, device_ids):
    for leaf in jax.tree.leaves(params):
        shards = leaf.addressable_shards
        assert sorted(s.device.id for s in shards) == device_ids
        for shard in shards[1:]:
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(shards[0].data))


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
@pytest.mark.parametrize("agent", ["ppo"])  # IMPALA on this layout: the determinism test
def test_one_actor_device_three_learner_devices_keep_identical_params(agent, tmp_path):
    host = host_training.HostSettings(
        actor_threads=2, envs_per_thread=3, actor_devices=(0,)
    )
    summary = host_training.train_host(
        small_config(agent), QUIET, host, str(tmp_path), log=lambda s: None
    )
    state = summary["state"]
    assert int(state.update_step) == 5
    assert_replicated_on(state.params, [1, 2, 3])
    assert summary["env_steps"] == 5 * 6 * 16
    assert summary["actor_env_steps"] >= summary["env_steps"]
    assert 0 <= summary["policy_lag/min"] <= summary["policy_lag/max"] <= 2
    assert not live_actor_threads()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for name in ("sps", "policy_lag/mean", "time/inference_s", "time/env_step_s",
                 "time/actor_queue_wait_s", "time/learner_queue_wait_s", "time/transfer_s",
                 "time/update_s", "env_faults", "loss/total"):
        assert name in lines[0], name
    assert lines[-1]["params_sha256"] == checkpoint.params_sha256(
        checkpoint.load_params(str(tmp_path / "checkpoint"))
    )


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_deterministic_mode_reproduces_the_run_and_pins_the_lag_to_one():
    host = host_training.HostSettings(
        actor_threads=2, envs_per_thread=3, actor_devices=(0,), learner_devices=(1, 2, 3),
        deterministic=True,
    )
    config = small_config("impala", total_steps=6 * 16 * 6)
    runs = [
        host_training.train_host(config, QUIET, host, None, log=lambda s: None)
        for _ in range(2)
    ]
    assert runs[0]["params_sha256"] == runs[1]["params_sha256"]
    assert_replicated_on(runs[0]["state"].params, [1, 2, 3])
    # Update 0 trains on version-0 data (lag 0); update u >= 1 on version u - 1.
    assert runs[0]["policy_lag/min"] == 0 and runs[0]["policy_lag/max"] == 1
    assert runs[0]["policy_lag/mean"] == pytest.approx(5 / 6)


class FlakyCartPole(CartPoleEnv):
    """CartPole whose step raises on the 40th and 150th step taken by any instance."""

    counter = itertools.count(1)
    lock = threading.Lock()

    def step(self, action):
        with self.lock:
            n = next(self.counter)
        if n in (40, 150):
            raise RuntimeError(f"simulated simulator crash at global step {n}")
        return super().step(action)


gymnasium.register(
    id="JaxrlDistTest/FlakyCartPole-v0", entry_point=FlakyCartPole, max_episode_steps=500
)


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_a_crashing_env_is_recreated_counted_and_training_goes_on(tmp_path):
    FlakyCartPole.counter = itertools.count(1)
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=3, learner_devices=(0,))
    config = agents.default_config(
        "ppo", "gymnasium:JaxrlDistTest/FlakyCartPole-v0", rollout_len=16,
        total_steps=6 * 16 * 8, num_minibatches=2, num_epochs=1,
    )
    summary = host_training.train_host(
        config, QUIET, host, str(tmp_path), log=lambda s: None
    )
    assert summary["env_faults"] == 2
    assert summary["env_steps"] == 6 * 16 * 8
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-2])["env_faults"] == 2
    assert not live_actor_threads()


class WrongShapeEnv(gymnasium_env.VectorEnv):
    """Observations of the wrong shape: the policy network rejects them (a fatal bug)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.obs = np.zeros((self.num_envs, 7), np.float32)


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_a_fatal_actor_error_stops_the_run_joins_threads_and_keeps_a_checkpoint(tmp_path):
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=2, learner_devices=(0,))
    t0 = time.perf_counter()
    # Both threads fail; whichever the learner sees first is reported.
    with pytest.raises(errors.ActorError, match=r"actor thread [01] failed: ScopeParamShape"):
        host_training.train_host(
            small_config("a2c", total_steps=10**6), QUIET, host, str(tmp_path),
            log=lambda s: None,
            make_env=lambda s, seed: WrongShapeEnv(s.env, s.envs_per_thread, seed),
        )
    assert time.perf_counter() - t0 < 60
    assert not live_actor_threads()
    params = checkpoint.load_params(str(tmp_path / "checkpoint"))
    assert set(params) == {"policy", "value"}


class StallingEnv(gymnasium_env.VectorEnv):
    """Its 5th step hangs for 2 s (a stuck simulator)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0

    def step(self, action):
        self.calls += 1
        if self.calls == 5:
            time.sleep(2.0)
        return super().step(action)


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_a_stalled_actor_is_an_error_not_a_hang():
    host = host_training.HostSettings(
        actor_threads=1, envs_per_thread=2, learner_devices=(0,), stall_timeout_s=0.5
    )
    t0 = time.perf_counter()
    with pytest.raises(errors.ActorError, match="no rollout from actor thread 0 in 0.5s"):
        host_training.train_host(
            small_config("a2c", rollout_len=4, total_steps=10**6), QUIET, host, None,
            log=lambda s: None,
            make_env=lambda s, seed: StallingEnv(s.env, s.envs_per_thread, seed),
        )
    assert time.perf_counter() - t0 < 60
    assert not live_actor_threads()


def spawn_with_sigint_default(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child starts with SIGINT's default disposition.

    A shell without job control starts background jobs (``pytest ... &``, nohup) with
    SIGINT ignored, an ignored signal stays ignored across exec, and Python then leaves
    it ignored: SIGINT would never reach the child. Catching it here for the moment of
    the spawn makes the child start with the default (exec resets caught signals).
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(*args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


# Two causes of "still running 10 s after SIGINT" inside the full suite: the suite run as
# a background job (SIGINT ignored, see spawn_with_sigint_default), and, on a loaded
# 2-core machine, > 9 s in the interpreter's teardown after sys.exit (train.py now
# leaves with os._exit once everything is saved).
def test_ctrl_c_stops_within_ten_seconds_with_a_checkpoint_and_nonzero_exit(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    # -X faulthandler: should it hang, SIGABRT makes the child print every thread's stack.
    proc = spawn_with_sigint_default(
        [sys.executable, "-X", "faulthandler", os.path.join(ROOT, "experiments", "train.py"),
         "--agent=ppo", "--env=gymnasium:CartPole-v1", "--total_steps=100000000",
         f"--workdir={workdir}", "--compilation_cache=", "--log_points=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        for line in proc.stdout:
            if line.startswith("env_steps"):
                break
        time.sleep(1.0)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, stderr = proc.communicate(timeout=30)
            pytest.fail(f"still running 10 s after SIGINT; its stacks:\n{stderr[-10000:]}")
        stopped_s = time.perf_counter() - t0
        print(f"stopped {stopped_s:.2f} s after SIGINT")  # shown with -rP
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert rc == 130, stderr
    assert stopped_s < 10
    assert "interrupted" in stderr and "actor threads joined" in stderr
    params = checkpoint.load_params(str(workdir / "checkpoint"))
    assert set(params) == {"policy", "value"}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


# Host-actor CartPole settings the suite holds to the bar (>= 475 within 1e6
# steps). Deterministic mode (lag pinned to 1) makes the run the same on every try
# on one machine, but XLA compiles for the host's vector ISA, so float rounding (and
# the run) differs between CPUs: PPO at 4e5 steps reached greedy 496.4 on an AVX2
# (Zen 3) VM and 470.8 on an AVX-512 (Zen 4) one; at 5e5 it reached 496.6 and 500.0
# (6e5: 500.0 on Zen 4), so it runs 5e5.
# Ape-X: one thread of 32 envs (half the inference calls per env step of 2 x 16), and
# 8 learner steps per update of 256 env steps: the replay ratio of the on-device default.
HOST_LEARNING = {
    "ppo": (2, 8, dict(rollout_len=64, total_steps=500_000)),
    "impala": (2, 8, dict(rollout_len=10, total_steps=400_000)),
    "apex": (1, 32, dict(rollout_len=8, learner_steps=8, total_steps=500_000)),
}


# One host-actor learning run in a fresh process (made in the background while other
# tests run, see conftest.BackgroundRuns): train_host as below, summary on the last line.
HOST_LEARNING_MAIN = r"""
import json, sys
from jaxrl_dist import agents
from jaxrl_dist.sebulba import training as host_training
from jaxrl_dist.anakin import training
agent, threads, envs, overrides = json.loads(sys.argv[1])
host = host_training.HostSettings(actor_threads=threads, envs_per_thread=envs,
                                  deterministic=True, learner_devices=(0,))
config = agents.default_config(agent, "gymnasium:CartPole-v1", **overrides)
summary = host_training.train_host(
    config, training.RunSettings(eval_episodes=32, log_points=10, progress_every_s=1e9),
    host, None, log=lambda s: None,
)
print("SUMMARY " + json.dumps({k: summary[k] for k in
                               ("env_steps", "eval/episode_return", "policy_lag/max")}))
"""


def background_runs(items, tmp_path_factory):
    del tmp_path_factory
    return [
        script_job(("host_learning", agent), "-c", HOST_LEARNING_MAIN,
                   json.dumps([agent, *HOST_LEARNING[agent]]), devices=4)
        for agent in (item.callspec.params["agent"] for item in items
                      if item.originalname == "test_host_actors_solve_gymnasium_cartpole")
    ]


# IMPALA and Ape-X are `slow`: Ray actors and threads compute exactly what each other
# compute with every agent (tests/sebulba/test_ray_actors.py), threads solve CartPole
# with PPO (below), and each agent's default command solves it on device
# (tests/cli/test_learning.py).
SLOW_HOST_LEARNING = ("apex", "impala")


@pytest.mark.parametrize("agent", [
    pytest.param(agent, marks=pytest.mark.slow) if agent in SLOW_HOST_LEARNING else agent
    for agent in sorted(HOST_LEARNING)
])
def test_host_actors_solve_gymnasium_cartpole(background, agent):
    result = background.result(("host_learning", agent))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("SUMMARY "), result.stdout
    summary = json.loads(line[len("SUMMARY "):])
    assert summary["env_steps"] <= 1_000_000
    assert summary["eval/episode_return"] >= 475, summary["eval/episode_return"]
    assert summary["policy_lag/max"] == 1


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_continuous_actions_with_host_actors():
    host = host_training.HostSettings(actor_threads=1, envs_per_thread=4, learner_devices=(0,))
    config = agents.default_config(
        "impala", "gymnasium:Pendulum-v1", rollout_len=8, total_steps=4 * 8 * 3
    )
    summary = host_training.train_host(config, QUIET, host, None, log=lambda s: None)
    assert "log_std" in summary["params"]["policy"]["params"]
    assert np.isfinite(summary["history"][-1]["loss/total"])
    assert summary["eval/episode_return"] < 0  # Pendulum pays negative rewards


@pytest.mark.usefixtures("fast_compile")  # a few updates: compile-bound
def test_apex_host_actors_refresh_params_every_param_refresh_steps_on_two_learners():
    # Threads fetch parameters only every 2 rollouts (2 x 16 steps x 4 envs): in
    # deterministic mode rollout r acts with version r-1 when it fetches, else with the
    # previous fetch's, so the lag alternates 1, 2 (0 for rollout 0).
    host = host_training.HostSettings(
        actor_threads=2, envs_per_thread=4, actor_devices=(0,), learner_devices=(1, 2),
        deterministic=True, param_refresh_steps=2 * 16 * 4,
    )
    config = small_config(
        "apex", total_steps=8 * 16 * 6, buffer_capacity=1024, batch_size=32,
        learning_starts=256, hidden_sizes=(16, 16),
    )
    summary = host_training.train_host(config, QUIET, host, None, log=lambda s: None)
    assert (summary["policy_lag/min"], summary["policy_lag/max"]) == (0, 2)
    state = summary["state"]
    assert_replicated_on(state.params, [1, 2])
    replay = state.agent_state.replay
    # One shard per learner device, each with its 4 of the 8 envs; learning starts at
    # update 1 (256 transitions stored).
    assert replay.size.tolist() == [6 * 16 * 4, 6 * 16 * 4]
    assert int(state.agent_state.learner_steps) == 5 * config.learner_steps
