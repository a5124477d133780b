"""shuffle.permutation: always a permutation, keyed, and uniform over positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import shuffle


@pytest.mark.parametrize("n", [1, 2, 16, 128, shuffle.MAX_RANK_LENGTH, shuffle.MAX_RANK_LENGTH + 1])
def test_is_a_permutation_and_depends_on_the_key(n):
    keys = jax.random.split(jax.random.key(0), 8)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys))
    assert perms.dtype == np.int32 and perms.shape == (8, n)
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    if n >= 16:
        assert len({tuple(p) for p in perms}) == 8
    again = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys))
    np.testing.assert_array_equal(perms, again)


def test_ties_are_broken_into_a_permutation(monkeypatch):
    # Every key equal: the ranks come from the index alone and are still 0..n-1.
    monkeypatch.setattr(jax.random, "bits", lambda key, shape, dtype: jnp.zeros(shape, dtype))
    np.testing.assert_array_equal(shuffle.permutation(jax.random.key(0), 5), np.arange(5))


def test_each_element_lands_uniformly_over_positions():
    n, draws = 8, 40_000
    keys = jax.random.split(jax.random.key(1), draws)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys))
    counts = np.zeros((n, n))
    for pos in range(n):
        counts[:, pos] = np.bincount(perms[:, pos], minlength=n)
    expected = draws / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 49 degrees of freedom ((n-1)^2); P(chi2 > 90) < 1e-3 for a uniform shuffle.
    assert chi2 < 90, chi2


def test_bad_length():
    with pytest.raises(ValueError, match="permutation length must be >= 1, got 0"):
        shuffle.permutation(jax.random.key(0), 0)
