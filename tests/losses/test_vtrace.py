"""V-trace against a plain loop of eq. (1) of the IMPALA paper, and its invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import losses

T, B = 9, 4


def random_inputs(seed, zero_discount_prob=0.2):
    rng = np.random.default_rng(seed)
    log_rhos = rng.normal(0.0, 0.7, (T, B)).astype(np.float32)
    discounts = (0.95 * (rng.random((T, B)) > zero_discount_prob)).astype(np.float32)
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    bootstrap_value = rng.normal(size=(B,)).astype(np.float32)
    return log_rhos, discounts, rewards, values, bootstrap_value


def eq1_reference(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar, pg_bar,
                  lambda_):
    """Eq. (1) as a sum over t >= s of discounted, trace-weighted TD errors (no recursion)."""
    rhos = np.exp(log_rhos.astype(np.float64))
    next_v = np.concatenate([values[1:], bootstrap_value[None]], 0).astype(np.float64)
    vs = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total = 0.0
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[i, b] * lambda_ * min(c_bar, rhos[i, b])
                delta = min(rho_bar, rhos[t, b]) * (
                    rewards[t, b] + discounts[t, b] * next_v[t, b] - values[t, b])
                total += weight * delta
            vs[s, b] = values[s, b] + total
    vs_next = np.concatenate([vs[1:], bootstrap_value[None]], 0)
    pg = np.minimum(pg_bar, rhos) * (rewards + discounts * vs_next - values)
    return vs, pg


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rho_bar,c_bar,pg_bar,lambda_", [
    (1.0, 1.0, 1.0, 1.0), (1.7, 0.8, 1.3, 0.9), (0.6, 1.4, 2.0, 0.5)])
def test_matches_plain_loop_of_eq1(seed, rho_bar, c_bar, pg_bar, lambda_):
    inputs = random_inputs(seed)
    out = losses.vtrace(*inputs, clip_rho_threshold=rho_bar, clip_c_threshold=c_bar,
                        clip_pg_rho_threshold=pg_bar, lambda_=lambda_)
    vs, pg = eq1_reference(*inputs, rho_bar, c_bar, pg_bar, lambda_)
    np.testing.assert_allclose(out.vs, vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages, pg, rtol=1e-5, atol=1e-5)


def test_no_clipping_with_none_thresholds():
    inputs = random_inputs(3)
    out = losses.vtrace(*inputs, clip_rho_threshold=None, clip_c_threshold=None,
                        clip_pg_rho_threshold=None)
    vs, pg = eq1_reference(*inputs, np.inf, np.inf, np.inf, 1.0)
    np.testing.assert_allclose(out.vs, vs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.pg_advantages, pg, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lambda_", [1.0, 0.9, 0.0])
def test_on_policy_equals_lambda_returns(lambda_):
    _, discounts, rewards, values, bootstrap_value = random_inputs(4)
    out = losses.vtrace(np.zeros((T, B), np.float32), discounts, rewards, values, bootstrap_value,
                        lambda_=lambda_)
    # λ-return, plain loop: G_t = r_t + γ_t ((1 − λ) V(x_{t+1}) + λ G_{t+1}), G_T = V(x_T).
    next_v = np.concatenate([values[1:], bootstrap_value[None]], 0)
    g = np.zeros((T, B))
    following = bootstrap_value.astype(np.float64)
    for t in reversed(range(T)):
        g[t] = rewards[t] + discounts[t] * ((1 - lambda_) * next_v[t] + lambda_ * following)
        following = g[t]
    np.testing.assert_allclose(out.vs, g, rtol=1e-5, atol=1e-5)
    if lambda_ == 1.0:  # then the pg advantage is the n-step return advantage of A3C
        g_next = np.concatenate([g[1:], bootstrap_value[None]], 0)
        np.testing.assert_allclose(out.pg_advantages, rewards + discounts * g_next - values,
                                   rtol=1e-5, atol=1e-5)


def test_truncation_equals_two_separate_segments():
    log_rhos, discounts, rewards, values, bootstrap_value = random_inputs(5, 0.0)
    cut = 4  # the episode is truncated after step `cut`; row cut+1 starts a new episode
    final_value = np.float32(0.37) * np.ones(B, np.float32)  # V(final observation)
    next_values = np.concatenate([values[1:], bootstrap_value[None]], 0)
    next_values[cut] = final_value
    truncated = np.zeros((T, B), bool)
    truncated[cut] = True
    kwargs = dict(clip_rho_threshold=1.5, clip_c_threshold=0.9, lambda_=0.95)
    joined = losses.vtrace(log_rhos, discounts, rewards, values, None, next_values=next_values,
                           truncated=truncated, **kwargs)
    first = losses.vtrace(log_rhos[:cut + 1], discounts[:cut + 1], rewards[:cut + 1],
                          values[:cut + 1], final_value, **kwargs)
    second = losses.vtrace(log_rhos[cut + 1:], discounts[cut + 1:], rewards[cut + 1:],
                           values[cut + 1:], bootstrap_value, **kwargs)
    for j, a, b in zip(joined, first, second, strict=True):
        np.testing.assert_allclose(j, np.concatenate([a, b]), rtol=1e-6, atol=1e-6)


def test_jit_equals_eager_and_targets_stop_gradients():
    inputs = [jnp.asarray(x) for x in random_inputs(6)]
    kwargs = dict(clip_rho_threshold=1.2, clip_c_threshold=0.7, lambda_=0.8)
    eager = losses.vtrace(*inputs, **kwargs)
    jitted = jax.jit(lambda *a: losses.vtrace(*a, **kwargs))(*inputs)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(e, j, rtol=1e-6, atol=1e-6)
    grads = jax.grad(lambda v: jnp.sum(losses.vtrace(*inputs[:3], v, inputs[4], **kwargs).vs
                                       + losses.vtrace(*inputs[:3], v, inputs[4]).pg_advantages))(
        inputs[3])
    np.testing.assert_array_equal(grads, 0.0)


def test_bad_arguments():
    inputs = random_inputs(7)
    with pytest.raises(ValueError, match="bootstrap_value or next_values"):
        losses.vtrace(*inputs[:4], None)
    with pytest.raises(ValueError, match="truncated needs next_values"):
        losses.vtrace(*inputs, truncated=np.zeros((T, B), bool))
    with pytest.raises(AssertionError):
        losses.vtrace(inputs[0][:, :2], *inputs[1:])
