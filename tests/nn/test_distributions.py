import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist.nn import distributions

Categorical, DiagGaussian = distributions.Categorical, distributions.DiagGaussian


def test_categorical_log_prob_entropy_kl():
    logits = jnp.array([[0.1, 1.0, -2.0], [3.0, 0.0, 0.5]])
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(Categorical.log_prob(logits, jnp.array([1, 2])),
                               np.log([p[0, 1], p[1, 2]]), rtol=1e-5)
    np.testing.assert_allclose(Categorical.entropy(logits), -(p * np.log(p)).sum(-1), rtol=1e-5)
    q = p[::-1]
    np.testing.assert_allclose(Categorical.kl(logits, logits[::-1]),
                               (p * np.log(p / q)).sum(-1), rtol=1e-5)


def test_gumbel_max_sampling_frequencies():
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    noise = Categorical.noise(jax.random.key(0), (20000,), 3)
    actions = Categorical.sample_from_noise(jnp.broadcast_to(logits, (20000, 3)), noise)
    freq = np.bincount(np.asarray(actions), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


def test_gaussian_log_prob_entropy_kl():
    p = distributions.GaussianParams(jnp.array([[0.5, -1.0]]), jnp.array([[0.1, -0.3]]))
    q = distributions.GaussianParams(jnp.array([[0.0, 0.2]]), jnp.array([[0.4, 0.0]]))
    a = jnp.array([[0.3, 0.7]])
    std = np.exp(np.asarray(p.log_std))
    ref = np.sum(-0.5 * ((a - p.mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(DiagGaussian.log_prob(p, a), ref, rtol=1e-5)
    np.testing.assert_allclose(DiagGaussian.entropy(p),
                               np.sum(np.log(std) + 0.5 * np.log(2 * np.pi * np.e), -1), rtol=1e-5)
    # Monte-Carlo KL[p||q] agrees with the closed form.
    noise = DiagGaussian.noise(jax.random.key(1), (200000,), 2)
    samples = DiagGaussian.sample_from_noise(
        jax.tree.map(lambda x: jnp.broadcast_to(x, (200000, 2)), p), noise)
    bp = jax.tree.map(lambda x: jnp.broadcast_to(x, (200000, 2)), p)
    bq = jax.tree.map(lambda x: jnp.broadcast_to(x, (200000, 2)), q)
    mc = jnp.mean(DiagGaussian.log_prob(bp, samples) - DiagGaussian.log_prob(bq, samples))
    np.testing.assert_allclose(DiagGaussian.kl(p, q)[0], mc, atol=0.01)
