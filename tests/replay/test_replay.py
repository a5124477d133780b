"""Sum-tree and proportional prioritized replay: sums, sampling law, no float drift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.replay import prioritized, sum_tree

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


def check_internal_nodes(tree):
    tree = np.asarray(tree)
    half = tree.shape[0] // 2
    for i in range(1, half):
        assert tree[i] == np.float32(tree[2 * i] + tree[2 * i + 1]), i


def test_every_node_is_the_sum_of_its_children_after_updates():
    rng = np.random.default_rng(0)
    tree = sum_tree.init(13)  # 16 leaf slots, 3 of them padding
    assert tree.shape == (32,)
    for _ in range(20):
        idx = rng.choice(13, size=5, replace=False)
        tree = sum_tree.set_leaves(tree, jnp.asarray(idx), jnp.asarray(rng.random(5)))
    check_internal_nodes(tree)
    np.testing.assert_allclose(sum_tree.total(tree), np.asarray(sum_tree.leaves(tree)).sum(),
                               rtol=1e-6)
    assert np.all(np.asarray(sum_tree.leaves(tree))[13:] == 0)


def test_find_follows_the_cumulative_sum():
    values = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 0.0, 3.0], np.float32)
    tree = sum_tree.set_leaves(sum_tree.init(7), jnp.arange(7), jnp.asarray(values))
    bounds = np.cumsum(values)
    targets = np.linspace(0, bounds[-1], 1001, endpoint=False).astype(np.float32)
    expected = np.searchsorted(bounds, targets, side="right")
    np.testing.assert_array_equal(sum_tree.find(tree, jnp.asarray(targets)), expected)


def test_rounding_at_the_top_of_the_mass_never_reaches_a_zero_leaf():
    # Stratified targets (i + U) * total / B can round up to the total itself; a naive
    # descent then walks right into the zero leaves at the end.
    tree = sum_tree.set_leaves(sum_tree.init(8), jnp.arange(3), jnp.array([0.1, 0.2, 0.3]))
    total = sum_tree.total(tree)
    targets = jnp.stack([total, jnp.nextafter(total, 0.0), total * 1.0000001])
    np.testing.assert_array_equal(sum_tree.find(tree, targets), [2, 2, 2])


def test_sampling_frequencies_match_priorities_to_the_alpha():
    alpha, cap = 0.6, 64
    rng = np.random.default_rng(1)
    priorities = rng.random(cap).astype(np.float32) * 3
    state = prioritized.init(jnp.zeros(2), cap)
    state = prioritized.add(state, jnp.zeros((cap, 2)), jnp.asarray(priorities), alpha)
    draws = jax.jit(lambda k: prioritized.sample(state, k, 4096, 0.4).indices)
    counts = np.zeros(cap)
    for i in range(50):
        counts += np.bincount(np.asarray(draws(jax.random.key(i))), minlength=cap)
    expected = priorities**alpha / (priorities**alpha).sum()
    freq = counts / counts.sum()
    # 204,800 draws: 5 binomial standard deviations per bin.
    sd = np.sqrt(expected * (1 - expected) / counts.sum())
    assert np.all(np.abs(freq - expected) < 5 * sd + 1e-4)


def test_importance_weights_and_probabilities():
    alpha, beta, cap = 0.5, 0.4, 8
    priorities = jnp.array([1.0, 4.0, 9.0, 16.0, 0.0, 0.0, 0.0, 0.0])
    state = prioritized.init(jnp.zeros(()), cap)
    state = prioritized.add(state, jnp.arange(4.0), priorities[:4], alpha)
    s = prioritized.sample(state, jax.random.key(0), 16, beta)
    p = np.array([1.0, 2.0, 3.0, 4.0]) / 10.0  # p^α / Σ p^α
    idx = np.asarray(s.indices)
    np.testing.assert_allclose(s.probabilities, p[idx], rtol=1e-6)
    w = (4 * p[idx]) ** -beta
    np.testing.assert_allclose(s.weights, w / w.max(), rtol=1e-5)
    np.testing.assert_array_equal(s.items, idx.astype(np.float32))  # item i stored at slot i


def test_add_wraps_around_and_size_saturates():
    state = prioritized.init({"x": jnp.zeros(3, jnp.int32)}, 5)
    for start in (0, 3, 6):
        items = {"x": jnp.arange(start, start + 3)[:, None] * jnp.ones(3, jnp.int32)}
        state = prioritized.add(state, items, jnp.ones(3), 0.6)
    # 9 items into 5 slots: slots hold items 5, 6, 7, 8, 4 -> [5, 6, 7, 8, 4].
    np.testing.assert_array_equal(state.storage["x"][:, 0], [5, 6, 7, 8, 4])
    assert int(state.size) == 5 and int(state.position) == 4
    with pytest.raises(ValueError, match="cannot add 6 items"):
        prioritized.add(state, {"x": jnp.zeros((6, 3), jnp.int32)}, jnp.ones(6), 0.6)


def test_updated_priorities_change_what_is_sampled():
    state = prioritized.init(jnp.zeros(()), 4)
    state = prioritized.add(state, jnp.arange(4.0), jnp.ones(4), 1.0)
    state = prioritized.update_priorities(state, jnp.array([0, 1, 2]), jnp.zeros(3), 1.0)
    s = prioritized.sample(state, jax.random.key(3), 256, 0.4)
    assert np.all(np.asarray(s.indices) == 3)
    np.testing.assert_allclose(s.weights, 1.0)


def test_zero_priorities_are_never_sampled_even_at_alpha_zero():
    # α = 0 is uniform replay over the items with p > 0; 0^0 = 1 must not revive p = 0.
    state = prioritized.init(jnp.zeros(()), 4)
    state = prioritized.add(state, jnp.arange(4.0), jnp.array([1.0, 0.0, 2.0, 0.0]), 0.0)
    state = prioritized.update_priorities(state, jnp.array([2]), jnp.zeros(1), 0.0)
    s = prioritized.sample(state, jax.random.key(0), 256, 0.4)
    assert np.all(np.asarray(s.indices) == 0)


def test_bad_arguments():
    state = prioritized.init(jnp.zeros(()), 4)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        prioritized.add(state, jnp.zeros(1), jnp.ones(1), -0.1)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        prioritized.sample(state, jax.random.key(0), 4, -1.0)
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        prioritized.sample(state, jax.random.key(0), 0, 0.4)
    with pytest.raises(ValueError, match="capacity must be > 0"):
        sum_tree.init(0)


def test_millions_of_updates_leave_no_drift_and_never_sample_zero_priorities():
    # 2**16 leaves, 2.6 million priority writes (a third of them zeros, the rest spanning
    # 12 orders of magnitude), then 131,072 samples: none may land on a zero leaf.
    cap, batch, rounds = 2**16, 8192, 320

    @jax.jit
    def churn(tree, key):
        def body(i, tree):
            k_idx, k_val, k_zero, k_exp = jax.random.split(jax.random.fold_in(key, i), 4)
            idx = jax.random.randint(k_idx, (batch,), 0, cap)
            mantissa = jax.random.uniform(k_val, (batch,), minval=0.5, maxval=1.0)
            exponent = jax.random.uniform(k_exp, (batch,), minval=-6.0, maxval=6.0)
            values = mantissa * 10.0**exponent
            values = jnp.where(jax.random.uniform(k_zero, (batch,)) < 1 / 3, 0.0, values)
            # One value per index: duplicates in a batch get the value of the first draw.
            first = jnp.zeros(cap, jnp.int32).at[idx].set(jnp.arange(batch))[idx]
            return sum_tree.set_leaves(tree, idx, values[first])

        return jax.lax.fori_loop(0, rounds, body, tree)

    tree = churn(sum_tree.init(cap), jax.random.key(0))
    leaves = np.asarray(sum_tree.leaves(tree), np.float64)
    assert rounds * batch >= 2_500_000
    np.testing.assert_allclose(float(sum_tree.total(tree)), leaves.sum(), rtol=1e-5)
    zero = leaves == 0
    assert 0.2 < zero.mean() < 0.5
    u = jax.random.uniform(jax.random.key(1), (2**17,)) * sum_tree.total(tree)
    # Include the very top of the range, where rounding pushes a naive descent right.
    u = jnp.concatenate([u, jnp.full((16,), sum_tree.total(tree)) * (1 - 1e-7)])
    found = np.asarray(sum_tree.find(tree, u))
    assert not zero[found].any()
    assert found.max() < cap


def test_a_few_positive_leaves_among_a_million_are_the_only_ones_sampled():
    cap = 1_000_000
    state = prioritized.init(jnp.zeros((), jnp.int32), cap)
    positives = jnp.array([3, 123_457, 999_999])
    state = state._replace(size=jnp.asarray(cap, jnp.int32))
    state = prioritized.update_priorities(state, positives, jnp.array([1e-30, 1.0, 1e30]), 1.0)
    s = prioritized.sample(state, jax.random.key(0), 4096, 0.4)
    assert set(np.asarray(s.indices).tolist()) <= {3, 123_457, 999_999}
