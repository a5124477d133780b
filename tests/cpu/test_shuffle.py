"""shuffle.permutations: always permutations, keyed, and uniform over positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.cpu import shuffle

SORTED_N = 1024  # 8 rows of 1024: 8·1024² > MAX_RANK_ELEMENTS, the sorting branch


def test_the_sorting_branch_is_exercised():
    assert 8 * SORTED_N**2 > shuffle.MAX_RANK_ELEMENTS >= 8 * 128**2


@pytest.mark.parametrize("n", [1, 2, 16, 128, SORTED_N])
def test_rows_are_permutations_and_depend_on_the_key(n):
    keys = jax.random.split(jax.random.key(0), 8)
    perms = np.asarray(jax.jit(shuffle.permutations, static_argnums=1)(keys, n))
    assert perms.dtype == np.int32 and perms.shape == (8, n)
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    if n >= 16:
        assert len({tuple(p) for p in perms}) == 8
    again = np.asarray(jax.jit(shuffle.permutations, static_argnums=1)(keys, n))
    np.testing.assert_array_equal(perms, again)


def test_ties_are_broken_into_a_permutation(monkeypatch):
    # Every key equal: the ranks come from the index alone and are still 0..n-1.
    monkeypatch.setattr(jax.random, "bits", lambda key, shape, dtype: jnp.zeros(shape, dtype))
    keys = jax.random.split(jax.random.key(0), 2)
    np.testing.assert_array_equal(shuffle.permutations(keys, 5), np.tile(np.arange(5), (2, 1)))


def test_each_element_lands_uniformly_over_positions():
    n, draws = 8, 40_000
    keys = jax.random.split(jax.random.key(1), draws)
    perms = np.asarray(jax.jit(shuffle.permutations, static_argnums=1)(keys, n))
    counts = np.zeros((n, n))
    for pos in range(n):
        counts[:, pos] = np.bincount(perms[:, pos], minlength=n)
    expected = draws / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 49 degrees of freedom ((n-1)^2); P(chi2 > 90) < 1e-3 for a uniform shuffle.
    assert chi2 < 90, chi2


def test_bad_arguments():
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="permutation length must be >= 1, got 0"):
        shuffle.permutations(keys, 0)
    with pytest.raises(ValueError, match=r"keys must be \[R\], got shape \(\)"):
        shuffle.permutations(jax.random.key(0), 4)
