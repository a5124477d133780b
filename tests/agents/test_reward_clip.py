"""``reward_clip``: rewards are clipped in the learner (Mnih et al. 2015, Methods;
Espeholt et al. 2018, Sec. 5.3), and the episode returns the run logs are the env's.

Each learner's update with ``reward_clip=c`` on rewards ``r`` must equal its update with
no clipping on ``clip(r, -c, c)``, and differ from its update on ``r`` itself.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, parallel, tuning, types
from jaxrl_dist.anakin import training
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.nn import distributions
from jaxrl_dist.sebulba import learner as host_learner

pytestmark = pytest.mark.usefixtures("fast_compile")  # one update each: compile-bound

ENV = "gymnasium:CartPole-v1"
T, B = 8, 4


def rollout(spec, rewards):
    rng = np.random.default_rng(0)
    a = spec.action_dim
    return types.Transition(
        obs=rng.standard_normal((T, B, *spec.obs_shape)).astype(np.float32),
        action=rng.integers(0, a, (T, B)).astype(np.int32),
        reward=rewards,
        terminated=np.arange(T * B).reshape(T, B) % 7 == 6,
        truncated=np.zeros((T, B), bool),
        next_obs=rng.standard_normal((T, B, *spec.obs_shape)).astype(np.float32),
        behaviour_log_prob=np.full((T, B), -np.log(a), np.float32),
        behaviour_dist=np.zeros((T, B, a), np.float32),
    )


def learner_update(agent, reward_clip, rewards):
    """The parameters after one host-learner update of ``agent`` on a fixed rollout."""
    spec = gymnasium_env.make_spec(ENV)
    config = agents.default_config(agent, ENV, rollout_len=T, hidden_sizes=(16,))
    config = dataclasses.replace(config, num_envs=B, reward_clip=reward_clip)
    if agent == "ppo":
        config = dataclasses.replace(config, num_minibatches=1, num_epochs=1)
    mesh = parallel.process_mesh([0])
    functions = agents.make_agent(config, spec, 1, tuning.for_mesh(mesh)).functions()
    learner = host_learner.HostLearner(functions, mesh)
    state = learner.init(jax.random.key(0))
    traj = jax.device_put(rollout(spec, rewards), learner.traj_sharding)
    state, _ = learner.update(state, (traj,), jax.random.key(1))
    return jax.device_get(state.params)


def rewards():
    r = np.random.default_rng(1).normal(0.0, 4.0, (T, B)).astype(np.float32)
    assert np.abs(r).max() > 2.0  # some are clipped at c = 1
    return r


def leaves_close(a, b):
    return all(np.allclose(x, y, rtol=1e-5, atol=1e-7)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("agent", ["ppo", "impala", "a2c"])
def test_the_learner_sees_clipped_rewards(agent):
    r = rewards()
    clipped = learner_update(agent, 1.0, r)
    assert leaves_close(clipped, learner_update(agent, 0.0, np.clip(r, -1.0, 1.0)))
    assert not leaves_close(clipped, learner_update(agent, 0.0, r))


def test_apex_n_step_returns_and_priorities_use_clipped_rewards():
    spec = gymnasium_env.make_spec(ENV)
    r = rewards()

    def batch(reward_clip, rewards_):
        config = agents.default_config("apex", ENV, rollout_len=T, hidden_sizes=(16,))
        config = dataclasses.replace(config, num_envs=B, reward_clip=reward_clip)
        agent = agents.make_agent(config, spec, 1, tuning.for_platform("cpu"))
        params = agent.init_params(jax.random.key(0))
        traj = rollout(spec, rewards_)
        q = agent.q_values(params, jnp.asarray(traj.obs))
        traj = traj._replace(behaviour_dist=distributions.EpsGreedyParams(
            q, jnp.full((T, B), 0.1, jnp.float32)))
        return jax.device_get(agent.actor_batch(params, traj, None))

    clipped = batch(1.0, r)
    assert leaves_close(clipped, batch(0.0, np.clip(r, -1.0, 1.0)))
    assert not leaves_close(clipped, batch(0.0, r))


def test_logged_episode_returns_are_not_clipped():
    # CartPole pays 1 per step: with c = 0.5 the learner sees 0.5, the log the game's 1.
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=32,
                                   total_steps=4 * 32 * 4, reward_clip=0.5)
    settings = training.RunSettings(num_devices=1, eval_episodes=2, log_points=2)
    summary = training.train(config, settings, log=lambda s: None)
    logged = summary["history"][-1]
    assert logged["train/episode_length"] > 8  # episodes ended in the window
    assert logged["train/episode_return"] == pytest.approx(logged["train/episode_length"])
    # The greedy evaluation's returns too: integers (1 per step), not halves.
    returns = np.asarray(summary["eval/returns"])
    assert np.all(returns >= 8) and np.all(returns == np.round(returns))
