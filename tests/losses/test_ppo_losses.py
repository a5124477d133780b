import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrl_dist import losses, parallel


def clip_objective_loop(log_probs, old_log_probs, advantages, eps):
    total = 0.0
    for lp, olp, a in zip(log_probs.ravel(), old_log_probs.ravel(), advantages.ravel(),
                          strict=True):
        r = np.exp(float(lp) - float(olp))
        total += min(r * a, min(max(r, 1 - eps), 1 + eps) * a)
    return -total / log_probs.size


def test_clip_loss_matches_loop_and_eq7():
    rng = np.random.default_rng(0)
    lp, olp, adv = (rng.normal(size=(6, 4)).astype(np.float32) * s for s in (0.5, 0.5, 1.0))
    loss, clip_frac = jax.jit(losses.ppo_clip_loss, static_argnums=3)(lp, olp, adv, 0.2)
    np.testing.assert_allclose(loss, clip_objective_loop(lp, olp, adv, 0.2), rtol=1e-5)
    ratio = np.exp(lp - olp)
    np.testing.assert_allclose(clip_frac, np.mean(np.abs(ratio - 1) > 0.2), rtol=1e-6)


def test_clip_loss_gradient_is_zero_when_clipped_in_the_favourable_direction():
    # Ratio 1.5 > 1 + ε with positive advantage: the objective is flat in θ.
    grad = jax.grad(lambda lp: losses.ppo_clip_loss(lp, jnp.zeros(1), jnp.ones(1), 0.2)[0])(
        jnp.log(jnp.full(1, 1.5))
    )
    np.testing.assert_allclose(grad, 0.0)
    grad = jax.grad(lambda lp: losses.ppo_clip_loss(lp, jnp.zeros(1), -jnp.ones(1), 0.2)[0])(
        jnp.log(jnp.full(1, 1.5))
    )
    assert grad[0] > 0  # negative advantage: still pushed down


def test_kl_penalty_loss_eq8():
    rng = np.random.default_rng(1)
    lp, olp, adv, kl = (rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4))
    loss = losses.ppo_kl_penalty_loss(lp, olp, adv, kl, 0.7)
    expected = -np.mean(np.exp(lp - olp) * adv - 0.7 * kl)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize(("kl", "expected"), [(0.001, 0.5), (0.01, 1.0), (0.1, 2.0)])
def test_adapt_kl_beta(kl, expected):
    np.testing.assert_allclose(losses.adapt_kl_beta(jnp.float32(1.0), jnp.float32(kl), 0.01),
                               expected)


def test_adapt_kl_beta_keeps_a_positive_beta_able_to_recover():
    beta = jnp.float32(1.0)
    for _ in range(400):  # a KL far below target for many updates: ~127 halvings reach 0
        beta = losses.adapt_kl_beta(beta, jnp.float32(0.0), 0.01)
    tiny = np.finfo(np.float32).tiny
    assert tiny <= float(beta) < 2 * tiny
    assert float(losses.adapt_kl_beta(beta, jnp.float32(1.0), 0.01)) == 2 * float(beta)
    assert float(losses.adapt_kl_beta(jnp.float32(0.0), jnp.float32(0.0), 0.01)) == 0.0
    assert float(losses.adapt_kl_beta(jnp.float32(0.0), jnp.float32(1.0), 0.01)) == 0.0


def test_value_loss_clipped_and_unclipped():
    v = np.array([1.0, 3.0, -2.0], np.float32)
    v_old = np.array([0.0, 0.0, 0.0], np.float32)
    ret = np.array([2.0, 0.0, -1.0], np.float32)
    np.testing.assert_allclose(losses.value_loss(v, v_old, ret), 0.5 * np.mean((v - ret) ** 2))
    clipped = v_old + np.clip(v - v_old, -0.2, 0.2)
    expected = 0.5 * np.mean(np.maximum((v - ret) ** 2, (clipped - ret) ** 2))
    np.testing.assert_allclose(losses.value_loss(v, v_old, ret, 0.2), expected, rtol=1e-6)


def test_normalize_advantages_sharded_equals_global():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(8, 4)).astype(np.float32)
    mesh = parallel.make_mesh(4)
    sharded = jax.jit(parallel.shard_map(
        lambda a: losses.normalize_advantages(a, parallel.DATA_AXIS), mesh,
        in_specs=P(None, parallel.DATA_AXIS), out_specs=P(None, parallel.DATA_AXIS),
    ))(x)
    np.testing.assert_allclose(sharded, (x - x.mean()) / (x.std() + 1e-8), rtol=1e-5, atol=1e-6)
