import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import losses


def gae_by_definition(rewards, values, next_values, discounts, truncated, lambda_):
    """Â_t = Σ_l (Π_{k<l} γ_{t+k} λ (1 − truncated_{t+k})) δ_{t+l}: the sum, not the recursion."""
    r, v, nv, d, tr = (np.asarray(x, np.float64) for x in
                       (rewards, values, next_values, discounts, truncated))
    t_len, batch = r.shape
    adv = np.zeros_like(r)
    for b in range(batch):
        for t in range(t_len):
            total, weight = 0.0, 1.0
            for k in range(t, t_len):
                total += weight * (r[k, b] + d[k, b] * nv[k, b] - v[k, b])
                weight *= d[k, b] * lambda_ * (1.0 - tr[k, b])
            adv[t, b] = total
    return adv, adv + v


def random_inputs(seed, t_len=9, batch=3):
    rng = np.random.default_rng(seed)
    terminated = rng.random((t_len, batch)) < 0.15
    truncated = (rng.random((t_len, batch)) < 0.15) & ~terminated
    return dict(
        rewards=rng.normal(size=(t_len, batch)).astype(np.float32),
        values=rng.normal(size=(t_len, batch)).astype(np.float32),
        next_values=rng.normal(size=(t_len, batch)).astype(np.float32),
        discounts=(0.97 * (1.0 - terminated)).astype(np.float32),
        truncated=truncated,
    )


@pytest.mark.parametrize("lambda_", [0.0, 0.8, 1.0])
@pytest.mark.parametrize("jit", [False, True])
def test_gae_matches_sum_definition(lambda_, jit):
    inputs = random_inputs(int(lambda_ * 10))
    fn = jax.jit(losses.gae, static_argnums=5) if jit else losses.gae
    adv, ret = fn(*inputs.values(), lambda_)
    ref_adv, ref_ret = gae_by_definition(*inputs.values(), lambda_)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_rejects_mismatched_shapes():
    x = jnp.zeros((4, 2))
    with pytest.raises(AssertionError):
        losses.gae(x, x, x, x, jnp.zeros((4, 3)), 0.9)
    with pytest.raises(AssertionError):
        losses.gae(jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), 0.9)


def test_termination_does_not_bootstrap_but_truncation_does():
    # One step that ends the episode, reward 1, V(x) = 2, V(x') = 10, γ = 0.5.
    ones = jnp.ones((1, 1))
    terminated_adv, _ = losses.gae(ones, 2 * ones, 10 * ones, 0.0 * ones, 0 * ones, 0.9)
    truncated_adv, _ = losses.gae(ones, 2 * ones, 10 * ones, 0.5 * ones, ones, 0.9)
    chex.assert_trees_all_close(terminated_adv, jnp.full((1, 1), 1.0 - 2.0))
    chex.assert_trees_all_close(truncated_adv, jnp.full((1, 1), 1.0 + 0.5 * 10.0 - 2.0))


def test_truncation_cuts_the_trace():
    # Step 0 is truncated: its advantage must not include step 1's δ (a new episode).
    rewards = jnp.array([[1.0], [100.0]])
    zeros = jnp.zeros((2, 1))
    adv, _ = losses.gae(rewards, zeros, zeros, jnp.full((2, 1), 0.9),
                        jnp.array([[1.0], [0.0]]), 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.0, 100.0])
