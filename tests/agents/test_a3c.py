"""A3C's two halves against Algorithm S3 of Mnih et al. (2016), without Ray.

The worker's gradient equals a plain loop of the paper's n-step accumulation; the
parameter server applies gradients in arrival order; a fresh gradient applied by the
server is A2C's update on the same rollout (A2C learns: tests/agents/ and the slow
learning runs). The Ray fleet around them: tests/sebulba/test_ray_actors.py.
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxrl_dist import agents, parallel, types
from jaxrl_dist.envs.spec import EnvSpec

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

T, B = 5, 3  # t_max = 5 (A3C's default), 3 envs
SPEC = EnvSpec((4,), gymnasium.spaces.Discrete(2), 2, True)


def make(agent, **overrides):
    config = agents.default_config(agent, "gymnasium:CartPole-v1", num_envs=B, rollout_len=T,
                                   hidden_sizes=(16,), **overrides)
    return agents.make_agent(config, SPEC)


def rollout(agent, params) -> types.Transition:
    """``[T, B]``: random observations, the agent's actions; env 0 terminates at step 1,
    env 1 is truncated at step 2 (both reset and run on), env 2 runs through; rewards
    up to 2. ``next_obs[t]`` is ``obs[t + 1]`` except where an episode ended."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(T, B, 4)).astype(np.float32)
    next_obs = np.concatenate([obs[1:], rng.normal(size=(1, B, 4))]).astype(np.float32)
    next_obs[1, 0], next_obs[2, 1] = rng.normal(size=(2, 4))  # the final observations
    action, log_prob, dist, _ = jax.jit(agent.act)(
        params, obs.reshape(T * B, 4), jax.random.key(1), jnp.zeros(T * B, jnp.int32))
    unflat = lambda x: x.reshape((T, B) + x.shape[1:])
    terminated = np.zeros((T, B), bool)
    truncated = np.zeros((T, B), bool)
    terminated[1, 0] = True
    truncated[2, 1] = True
    reward = rng.uniform(-2.0, 2.0, (T, B)).astype(np.float32)
    return types.Transition(obs, unflat(action), reward, terminated, truncated, next_obs,
                            unflat(log_prob), jax.tree.map(unflat, dist))


def algorithm_s3_loss(agent, params, traj):
    """The loss whose gradient is Algorithm S3's ``dθ`` (and ``dθ_v``), summed as the paper
    loops: per env, backwards from ``t_max``, ``R ← r_i + γR`` with ``R = 0`` after a
    terminal state and ``R = V(s')`` at the rollout's end or a truncation; the mean over
    the ``T·B`` steps, the entropy bonus and ``vf_coef`` as configured."""
    cfg = agent.config
    value = lambda x: agent.value(params, x[None])[0]
    total = 0.0
    for b in range(B):
        ret = None
        for i in reversed(range(T)):
            if traj.terminated[i, b]:
                ret = 0.0
            elif traj.truncated[i, b] or i == T - 1:
                ret = jax.lax.stop_gradient(value(traj.next_obs[i, b]))
            reward = float(np.clip(traj.reward[i, b], -cfg.reward_clip, cfg.reward_clip)
                           if cfg.reward_clip > 0 else traj.reward[i, b])
            ret = reward + cfg.gamma * ret
            dist, v = agent.policy_and_value(params, traj.obs[i, b][None])
            log_prob = agent.dist.log_prob(dist, traj.action[i, b][None])[0]
            advantage = jax.lax.stop_gradient(ret - v[0])
            total += (-log_prob * advantage + cfg.vf_coef * 0.5 * (ret - v[0]) ** 2
                      - cfg.ent_coef * agent.dist.entropy(dist)[0])
    return total / (T * B)


def test_a_worker_gradient_is_algorithm_s3s_accumulated_gradient():
    agent = make("a3c", reward_clip=1.0)
    params = agent.init_params(jax.random.key(0))
    traj = rollout(agent, params)
    grads, metrics = jax.jit(agent.actor_batch)(params, traj, jnp.arange(B))
    expected = jax.jit(jax.grad(lambda p: algorithm_s3_loss(agent, p, traj)))(params)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    assert np.isfinite(float(metrics["loss/total"]))


def test_the_server_applies_gradients_in_arrival_order_with_its_optimizer():
    agent = make("a3c")
    params = agent.init_params(jax.random.key(0))
    opt_state = agent.optimizer.init(params)
    traj = rollout(agent, params)
    first, _ = jax.jit(agent.actor_batch)(params, traj, jnp.arange(B))  # both at θ_0
    second = jax.tree.map(lambda g: -0.5 * g, first)

    @jax.jit
    def served_and_plain(params, opt_state):
        p, s = params, opt_state
        for grads in (first, second):
            p, s, metrics = agent.apply_gradients(p, s, grads)
        q, r = params, opt_state
        for grads in (first, second):
            updates, r = agent.optimizer.update(grads, r, q)
            q = optax.apply_updates(q, updates)
        return p, q, metrics

    p, q, metrics = served_and_plain(params, opt_state)
    jax.tree.map(np.testing.assert_array_equal, p, q)
    np.testing.assert_allclose(metrics["opt/grad_norm"], optax.tree.norm(second), rtol=1e-6)
    assert float(metrics["guard/nonfinite/parameters"]) == 0.0


def test_a_fresh_gradient_applied_by_the_server_is_a2cs_update():
    """No staleness (θ' = θ): A3C's step on a rollout is A2C's step on it."""
    a3c, a2c = make("a3c"), make("a2c", gae_lambda=1.0, optimizer="rmsprop")
    assert (a3c.config.lr, a3c.config.optimizer) == (a2c.config.lr, "rmsprop")
    params = a3c.init_params(jax.random.key(0))
    traj = rollout(a3c, params)
    opt_state = a3c.optimizer.init(params)
    serve = lambda p, o, t: a3c.apply_gradients(p, o, a3c.actor_batch(p, t, None)[0])[0]
    served = jax.jit(serve)(params, opt_state, traj)
    learn = parallel.shard_map(
        lambda p, o, t: a2c.learn(p, o, (), t, None, None)[:2], parallel.make_mesh(1),
        in_specs=(P(), P(), P()), out_specs=(P(), P()))
    learned, _ = jax.jit(learn)(params, a2c.optimizer.init(params), traj)
    for got, want in zip(jax.tree.leaves(served), jax.tree.leaves(learned), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(jax.tree.leaves(served)[0], jax.tree.leaves(params)[0])
