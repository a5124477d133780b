import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import errors, losses
from jaxrl_dist.envs import gymnax_env

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


def short_cartpole(max_steps=10):
    _, params = gymnax.make("CartPole-v1")
    return gymnax_env.GymnaxEnv("CartPole-v1", 2, params.replace(max_steps_in_episode=max_steps))


def alternate_until(env, num_steps):
    """Steps with actions 0,1,0,1,... (keeps the pole up for a few dozen steps)."""
    state = env.reset(jax.random.split(jax.random.key(0), env.num_envs))
    steps = []
    for t in range(num_steps):
        keys = jax.random.split(jax.random.key(100 + t), env.num_envs)
        reset = env.reset_pool(jax.random.split(jax.random.key(200 + t), env.num_envs))
        action = jnp.full((env.num_envs,), t % 2, jnp.int32)
        state, ts = env.step(state, action, keys, reset)
        steps.append(ts)
    return jax.tree.map(lambda *x: jnp.stack(x), *steps)


def test_unknown_env_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="--env must be a gymnax id"):
        gymnax_env.GymnaxEnv("CartPole-v9", 2)


def test_step_matches_gymnax_step():
    env = gymnax_env.GymnaxEnv("CartPole-v1", 3)
    ref_env, params = gymnax.make("CartPole-v1")
    state = env.reset(jax.random.split(jax.random.key(0), 3))
    for t in range(40):
        key = jax.random.key(t)
        keys = jax.random.split(key, 3)
        action = jnp.array([t % 2, 1, 0], jnp.int32)
        ref = jax.vmap(ref_env.step, in_axes=(0, 0, 0, None))(keys, state.env_state, action, params)
        # gymnax resets from the second half of its split step key.
        reset_keys = jax.vmap(lambda k: jax.random.split(k)[1])(keys)
        step_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
        state, ts = env.step(state, action, step_keys, env.reset_pool(reset_keys))
        obs, _, reward, terminated, truncated, info = ref
        np.testing.assert_allclose(ts.obs, obs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ts.next_obs, info["final_observation"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(ts.reward, reward)
        np.testing.assert_array_equal(ts.terminated, terminated)
        np.testing.assert_array_equal(ts.truncated, truncated & ~terminated)


def test_truncation_is_flagged_and_keeps_the_final_observation():
    env = short_cartpole(10)
    ts = alternate_until(env, 12)
    # Alternating actions keep CartPole up for 10 steps: cut by the time limit, not terminated.
    np.testing.assert_array_equal(ts.truncated[:, 0], [False] * 9 + [True, False, False])
    assert not ts.terminated[:10].any()
    np.testing.assert_array_equal(ts.episode_return[9], [10.0, 10.0])
    np.testing.assert_array_equal(ts.episode_length[9], [10, 10])
    # After the reset the next observation differs from the final one.
    assert not np.allclose(ts.next_obs[9], ts.obs[9])


def test_truncation_bootstrap_matters_on_a_truncated_episode():
    """With the true value V = 1/(1-γ) of a never-failing CartPole policy, every
    advantage should be 0. Bootstrapping on truncation (ours) gets that; treating
    truncation as termination (PureJaxRL) gives the last action an advantage of
    about -γ/(1-γ) = -99: a large, wrong push against a policy that did nothing wrong."""
    env = short_cartpole(10)
    ts = alternate_until(env, 10)
    gamma, value = 0.99, 1.0 / (1.0 - 0.99)
    values = jnp.full(ts.reward.shape, value)
    terminated = ts.terminated.astype(jnp.float32)
    ours, _ = losses.gae(ts.reward, values, values, gamma * (1 - terminated), ts.truncated, 0.95)
    done = (ts.terminated | ts.truncated).astype(jnp.float32)
    naive, _ = losses.gae(ts.reward, values, values, gamma * (1 - done), ts.truncated, 0.95)
    np.testing.assert_allclose(ours, 0.0, atol=1e-4)
    np.testing.assert_allclose(naive[9], 1.0 - value, rtol=1e-5)
    assert np.all(naive[:9] < -10.0)  # the error leaks back through the λ-trace


def test_termination_wins_when_both_flags_are_set():
    env = short_cartpole(500)
    state = env.reset(jax.random.split(jax.random.key(3), 2))
    # Push right until the cart-pole falls: terminated, never truncated.
    for t in range(60):
        reset = env.reset_pool(jax.random.split(jax.random.key(900 + t), 2))
        state, ts = env.step(state, jnp.ones(2, jnp.int32), jax.random.split(jax.random.key(t), 2),
                             reset)
        if ts.terminated.any():
            break
    assert ts.terminated.all() and not ts.truncated.any()
    assert (ts.episode_length == t + 1).all()
