"""A NaN/inf stops a run with a message naming where it FIRST appeared, in the order data
flows through an update: observations, rewards, loss, gradients, parameters.

Each test injects non-finite values at one place and checks that the place (and the
update) is named, on the on-device path (every agent for observations) and the
host-actor path (Gymnasium envs registered here that return NaN).
"""

import os

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from gymnasium.envs.classic_control import CartPoleEnv

from jaxrl_dist import agents, errors, losses, parallel
from jaxrl_dist.agents import base
from jaxrl_dist.anakin import on_device, training
from jaxrl_dist.envs import gymnax_env
from jaxrl_dist.run import checkpoint
from jaxrl_dist.sebulba import training as host_training

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny runs: compile-bound

UPDATES = 6  # on device: one log point per update, a checkpoint every 2
DEVICES = 2  # on device: the flags of both devices' envs are combined


def on_device_message(agent, tmp_path, env_params=None, env="CartPole-v1",
                      log_points=UPDATES, **overrides):
    """Runs ``agent`` on ``env`` (tiny) until the guard stops it; the error's message.
    ``log_points=UPDATES``: chunks of one update; 1: one chunk of them all."""
    extra = dict(buffer_capacity=256, batch_size=16, learning_starts=32) if agent == "apex" \
        else dict(num_minibatches=2, num_epochs=1) if agent == "ppo" else {}
    config = agents.default_config(agent, env, num_envs=4, rollout_len=8,
                                   total_steps=4 * 8 * UPDATES, **{**extra, **overrides})
    settings = training.RunSettings(eval_episodes=1, log_points=log_points,
                                    progress_every_s=1e9, checkpoint_every=2,
                                    num_devices=DEVICES)
    with pytest.raises(errors.NonFiniteError) as info:
        training.train(config, settings, str(tmp_path), log=lambda s: None,
                       env_params=env_params)
    message = str(info.value)
    assert "\n" not in message
    return message


def poison_rollouts(monkeypatch, when, **fields):
    """Where ``when(state, key)`` (the seed's update state and train key) holds, the
    on-device rollouts' ``fields`` hold the given values (what ``learn`` then sees)."""
    def local_update(self, state, key):
        def rollout(params, env_state, rollout_key, env_ids):
            env_state, traj, episodes = self.rollout(params, env_state, rollout_key, env_ids)
            bad = when(state, key)
            traj = traj._replace(**{
                name: jnp.where(bad, value, getattr(traj, name)) for name, value in fields.items()
            })
            return env_state, traj, episodes

        return on_device.update(self.agent, state, key, self.local_env_ids(), rollout)

    monkeypatch.setattr(on_device.OnDeviceLearner, "_local_update", local_update)


def from_update(update):
    """``when``: from update ``update`` (1-based, as messages count) on."""
    return lambda state, key: state.update_step + 1 >= update


# --------------------------------------------------------------------- on device


@pytest.mark.parametrize("agent", ["ppo", "a2c", "impala", "apex"])
def test_on_device_nan_observations_are_named_with_the_update(agent, tmp_path, monkeypatch):
    poison_rollouts(monkeypatch, from_update(3), obs=jnp.nan)
    message = on_device_message(agent, tmp_path)
    assert message.startswith("non-finite values first in observations (update 3, seed 0); "), \
        message
    assert message.endswith(
        f"; stopped, last good checkpoint: update 2 in {tmp_path}/checkpoints"), message
    assert checkpoint.RunCheckpointer(os.path.join(tmp_path, "checkpoints")).latest_step() == 2


def test_on_device_nan_observations_of_a_gymnax_env_are_named(tmp_path):
    # A CartPole whose gravity is NaN: every state after the reset is NaN.
    env_params = gymnax_env.GymnaxEnv("CartPole-v1", 1).params.replace(gravity=jnp.nan)
    message = on_device_message("a2c", tmp_path, env_params)
    assert message.startswith("non-finite values first in observations (update 1, seed 0)"), \
        message
    assert message.endswith("; stopped, no checkpoint was saved"), message


def test_on_device_nan_rewards_are_named(tmp_path, monkeypatch):
    poison_rollouts(monkeypatch, from_update(3), reward=jnp.nan)
    message = on_device_message("ppo", tmp_path)
    assert message.startswith("non-finite values first in rewards (update 3, seed 0); "), message


def test_on_device_a_loss_that_overflows_on_finite_rewards_is_named(tmp_path, monkeypatch):
    # Rewards of 1e38 are finite, but their n-step returns overflow float32: the loss is
    # the first non-finite value.
    poison_rollouts(monkeypatch, from_update(3), reward=jnp.float32(1e38))
    message = on_device_message("a2c", tmp_path)
    assert message.startswith("non-finite values first in loss (update 3, seed 0); "), message
    assert "loss/total" in message


def nan_gradients_of_the_baseline_loss(monkeypatch):
    """A2C's and IMPALA's baseline loss gets ``+ 0·√(V − sg(V))``: 0 added to the loss,
    but a gradient of 0·∞ = NaN."""
    original = losses.baseline_loss

    def baseline_loss(values, targets):
        kink = jnp.sqrt(values - jax.lax.stop_gradient(values))
        return original(values, targets) + 0.0 * jnp.sum(kink)

    monkeypatch.setattr(losses, "baseline_loss", baseline_loss)


def test_on_device_nan_gradients_of_a_finite_loss_are_named(tmp_path, monkeypatch):
    # Two SGD steps per update: the first step's gradients are NaN (its loss finite), so
    # the second step's loss is NaN too; the first step is the one named.
    nan_gradients_of_the_baseline_loss(monkeypatch)
    message = on_device_message("impala", tmp_path, num_minibatches=2)
    assert message.startswith("non-finite values first in gradients (update 1, seed 0); "), \
        message
    assert "opt/grad_norm" in message


def test_in_a_chunk_of_updates_the_first_place_is_named_not_its_consequences(
        tmp_path, monkeypatch):
    # One chunk of 6 updates on Pendulum: update 1's NaN gradients make the parameters
    # NaN, so update 2 acts with NaN torques and observes NaN states. Observations come
    # before gradients in an update, but update 2 started from non-finite parameters, so
    # it flags those alone: the chunk names update 1's gradients.
    nan_gradients_of_the_baseline_loss(monkeypatch)
    message = on_device_message("a2c", tmp_path, env="Pendulum-v1", log_points=1)
    assert message.startswith("non-finite values first in gradients (update 1, seed 0); "), \
        message


def nan_updates_at(step: int) -> optax.GradientTransformation:
    """Writes NaN into the updates of optimizer step ``step`` (0-based)."""
    def update(updates, count, params=None):
        del params
        return jax.tree.map(lambda u: jnp.where(count == step, jnp.nan, u), updates), count + 1

    return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


def test_on_device_nan_parameters_of_finite_gradients_are_named(tmp_path, monkeypatch):
    original = base.Agent._make_optimizer
    monkeypatch.setattr(base.Agent, "_make_optimizer",
                        lambda self: optax.chain(original(self), nan_updates_at(3)))
    message = on_device_message("a2c", tmp_path)  # one optimizer step per update
    assert message.startswith("non-finite values first in parameters (update 4, seed 0)"), \
        message
    assert message.endswith(f"; stopped, last good checkpoint: update 2 in {tmp_path}/checkpoints")


def test_only_the_seed_that_went_non_finite_is_named(tmp_path, monkeypatch):
    # Seed 1 of 2 alone sees NaN observations, from update 2 on (vmapped seeds are
    # independent); the seed index is not in the state: its train key tells it apart.
    config = agents.default_config("a2c", "CartPole-v1", num_envs=2, rollout_len=8,
                                   total_steps=2 * 8 * UPDATES)
    learner = on_device.OnDeviceLearner(config, parallel.make_mesh(1), num_seeds=2)
    seed_one = jax.random.key_data(learner.seed_keys(0)[1])[1]
    poison_rollouts(monkeypatch, lambda state, key: (state.update_step + 1 >= 2) & jnp.all(
        jax.random.key_data(key) == seed_one), obs=jnp.nan)
    settings = training.RunSettings(eval_episodes=1, log_points=UPDATES, progress_every_s=1e9,
                                    num_seeds=2, num_devices=1)
    with pytest.raises(errors.NonFiniteError) as info:
        training.train(config, settings, str(tmp_path), log=lambda s: None)
    message = str(info.value)
    assert message.startswith("non-finite values first in observations (update 2, seed 1); "), \
        message
    assert "seeds with non-finite values" not in message


# ---------------------------------------------------------------- host actors


class NaNAfterCartPole(CartPoleEnv):
    """CartPole whose observations (``what="obs"``) or rewards (``"reward"``) are NaN from
    the ``after``-th step of the env's life on (episodes included)."""

    def __init__(self, what="obs", after=11, render_mode=None):
        super().__init__(render_mode=render_mode)
        self.what, self.after, self.steps = what, after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.steps >= self.after:
            if self.what == "obs":
                obs = np.full_like(obs, np.nan)
            else:
                reward = float("nan")
        return obs, reward, terminated, truncated, info


for _what in ("obs", "reward"):
    gymnasium.register(id=f"JaxrlDistTest/NaN{_what.capitalize()}After10-v1",
                       entry_point=NaNAfterCartPole, max_episode_steps=500,
                       kwargs=dict(what=_what, after=11))


def host_message(agent, env_id, tmp_path):
    """A tiny deterministic host-actor run (5 env steps per thread and update: step 11 of
    every env falls in update 3) until the guard stops it; the error's message."""
    extra = dict(buffer_capacity=256, batch_size=16, learning_starts=32) if agent == "apex" \
        else dict(num_minibatches=1, num_epochs=1) if agent == "ppo" else {}
    config = agents.default_config(agent, f"gymnasium:{env_id}", rollout_len=5,
                                   total_steps=2 * 2 * 5 * 6, **extra)
    host = host_training.HostSettings(actor_threads=2, envs_per_thread=2, deterministic=True,
                                      learner_devices=(1,))
    settings = training.RunSettings(eval_episodes=1, log_points=6, progress_every_s=1e9)
    with pytest.raises(errors.NonFiniteError) as info:
        host_training.train_host(config, settings, host, str(tmp_path), log=lambda s: None)
    message = str(info.value)
    assert "\n" not in message
    params = checkpoint.load_params(os.path.join(tmp_path, "checkpoint"))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    return message


@pytest.mark.parametrize("agent", ["a2c", "apex"])
def test_host_nan_observations_are_named_with_the_update(agent, tmp_path):
    message = host_message(agent, "JaxrlDistTest/NaNObsAfter10-v1", tmp_path)
    assert message.startswith("non-finite values first in observations (update 3); "), message
    assert message.endswith(
        "; stopped, parameters of update 2 (the last finite ones) saved in checkpoint/"), message


def test_host_nan_rewards_are_named(tmp_path):
    message = host_message("ppo", "JaxrlDistTest/NaNRewardAfter10-v1", tmp_path)
    assert message.startswith("non-finite values first in rewards (update 3); "), message


# ------------------------------------------------------------------ the pieces


def test_flags_name_the_first_place_in_data_order_and_starting_params_alone():
    flags = base.nonfinite_flags(gradients=jnp.bool_(False), loss=jnp.bool_(False),
                                 observations=jnp.bool_(True))
    assert base.first_nonfinite_place(jax.device_get(flags)) == "loss"
    gated = base.update_flags(jnp.bool_(False), flags)
    assert set(gated) == set(base.NONFINITE_FLAGS)
    assert base.first_nonfinite_place(jax.device_get(gated)) == "parameters"
    assert np.isnan(gated[base.NONFINITE_FLAG + "parameters"])
    assert all(float(v) == 0.0 for k, v in gated.items() if not k.endswith("parameters"))
    # Stacked steps: the first step with a NaN flag, not the union over steps.
    steps = {base.NONFINITE_FLAG + "loss": jnp.array([0.0, 0.0, jnp.nan]),
             base.NONFINITE_FLAG + "gradients": jnp.array([0.0, jnp.nan, jnp.nan]),
             "loss/total": jnp.zeros(3)}
    first = base.first_step_flags(steps)
    assert list(steps) == ["loss/total"]  # flags removed, metrics kept
    assert base.first_nonfinite_place(jax.device_get(first)) == "gradients"
    clean = base.first_step_flags({base.NONFINITE_FLAG + "loss": jnp.zeros((2, 3))})
    assert base.first_nonfinite_place(jax.device_get(clean)) is None
    assert bool(base.all_finite({"a": jnp.ones(3), "b": jnp.arange(3)}, ()))
    assert not bool(base.all_finite({"a": jnp.array([1.0, jnp.inf])}))


def test_flags_are_not_logged(tmp_path):
    config = agents.default_config("a2c", "CartPole-v1", num_envs=2, rollout_len=8,
                                   total_steps=2 * 8 * 2)
    settings = training.RunSettings(eval_episodes=1, log_points=2, progress_every_s=1e9,
                                    num_devices=1)
    summary = training.train(config, settings, str(tmp_path), log=lambda s: None)
    assert summary["history"]
    for record in summary["history"]:
        assert not [k for k in record if k.startswith("guard/")], sorted(record)
