"""n-step returns, double-Q TD errors and the Huber loss against plain loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import losses


def loop_n_step(rewards, discounts, truncated, n):
    """The definition, one (t, b) at a time."""
    num_steps, batch = rewards.shape
    g = np.zeros_like(rewards)
    disc = np.ones_like(rewards)
    last = np.zeros(rewards.shape, np.int32)
    for b in range(batch):
        for t in range(num_steps):
            total, factor, k = 0.0, 1.0, 0
            while True:
                total += factor * rewards[t + k, b]
                factor *= discounts[t + k, b]
                end = truncated[t + k, b] or discounts[t + k, b] == 0
                if k + 1 == n or t + k + 1 == num_steps or end:
                    break
                k += 1
            g[t, b], disc[t, b], last[t, b] = total, factor, t + k
    return g, disc, last


@pytest.mark.parametrize("n", [1, 3, 5])
def test_n_step_returns_match_the_definition(n):
    rng = np.random.default_rng(n)
    num_steps, batch, gamma = 12, 6, 0.9
    rewards = rng.normal(size=(num_steps, batch)).astype(np.float32)
    terminated = rng.random((num_steps, batch)) < 0.15
    truncated = (rng.random((num_steps, batch)) < 0.15) & ~terminated
    discounts = (gamma * (1 - terminated)).astype(np.float32)
    got = jax.jit(losses.n_step_returns, static_argnums=3)(
        jnp.asarray(rewards), jnp.asarray(discounts), jnp.asarray(truncated), n
    )
    want = loop_n_step(rewards, discounts, truncated, n)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    np.testing.assert_array_equal(got[2], want[2])


def test_termination_zeroes_the_bootstrap_and_truncation_keeps_it():
    rewards = jnp.ones((4, 2))
    discounts = jnp.array([[0.9, 0.9], [0.0, 0.9], [0.9, 0.9], [0.9, 0.9]])
    truncated = jnp.array([[False, False], [False, True], [False, False], [False, False]])
    g, disc, last = losses.n_step_returns(rewards, discounts, truncated, 3)
    # env 0 terminates at t=1: from t=0, G = 1 + 0.9, no bootstrap.
    np.testing.assert_allclose([g[0, 0], disc[0, 0], last[0, 0]], [1.9, 0.0, 1], rtol=1e-6)
    # env 1 is truncated at t=1: G = 1 + 0.9, bootstrap from step 1's final obs with 0.81.
    np.testing.assert_allclose([g[0, 1], disc[0, 1], last[0, 1]], [1.9, 0.81, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="n must be >= 1"):
        losses.n_step_returns(rewards, discounts, truncated, 0)


def test_double_q_td_error_matches_a_loop_and_only_q_tm1_gets_gradients():
    rng = np.random.default_rng(0)
    batch, actions = 7, 3
    q_tm1, q_t_target, q_t_online = (rng.normal(size=(batch, actions)).astype(np.float32)
                                     for _ in range(3))
    a_tm1 = rng.integers(0, actions, batch)
    r_t = rng.normal(size=batch).astype(np.float32)
    discount_t = np.array([0.99, 0.0, 0.5, 0.99, 0.99, 0.0, 0.9], np.float32)
    got = losses.double_q_td_error(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online)
    want = [r_t[b] + discount_t[b] * q_t_target[b, np.argmax(q_t_online[b])] - q_tm1[b, a_tm1[b]]
            for b in range(batch)]
    np.testing.assert_allclose(got, want, rtol=1e-6)

    def loss(q_tm1, q_t_target, q_t_online):
        return jnp.sum(losses.double_q_td_error(q_tm1, a_tm1, r_t, discount_t, q_t_target,
                                                q_t_online) ** 2)

    grads = jax.grad(loss, argnums=(0, 1, 2))(q_tm1, q_t_target, q_t_online)
    assert np.abs(grads[0]).sum() > 0
    assert np.all(grads[1] == 0) and np.all(grads[2] == 0)


def test_huber_loss():
    x = jnp.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(
        losses.huber_loss(x), [2.5, 0.5, 0.125, 0.0, 0.125, 0.5, 2.5], rtol=1e-6
    )
    np.testing.assert_allclose(losses.huber_loss(x, delta=2.0)[-1], 4.0)
