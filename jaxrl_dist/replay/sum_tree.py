"""A sum-tree over ``N`` non-negative leaves, as one flat array (a pure pytree).

Layout: ``tree[1]`` is the root, node ``i`` has children ``2i`` and ``2i + 1``,
leaf ``j`` lives at ``P + j`` where ``P`` is ``N`` rounded up to a power of two
(padding leaves stay 0; ``tree[0]`` is unused). Used by proportional
prioritized replay (Schaul et al. 2016, arXiv 1511.05952, sec. 3.3 and App. B.2.1).

No float drift. Updates never add deltas into internal nodes (the source of
the drift that lets other sum-trees return zero-priority items after millions
of updates): every ancestor of a changed leaf is recomputed as the float sum
of its two children, so each node is exactly ``fl(left + right)`` at all times.
Sampling additionally never descends into a zero-sum subtree: a node with a
positive sum always has a positive child, and the descent takes it.

Costs: ``set_leaves``, ``find`` and ``find_with_probabilities`` are ``O(B log N)``
for ``B`` indices.
"""

import jax
import jax.numpy as jnp


def num_leaf_slots(capacity: int) -> int:
    """``P``: ``capacity`` rounded up to a power of two (>= 1)."""
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    return 1 << (capacity - 1).bit_length()


def init(capacity: int) -> jax.Array:
    """An all-zero tree for ``capacity`` leaves: ``[2P]`` float32.

    Raises:
      ValueError: ``capacity <= 0``.
    """
    return jnp.zeros(2 * num_leaf_slots(capacity), jnp.float32)


def depth(tree: jax.Array) -> int:
    """``log2(P)``: levels between the root and the leaves."""
    return (tree.shape[0] // 2).bit_length() - 1


def total(tree: jax.Array) -> jax.Array:
    """Sum of all leaves (the root), float32 scalar."""
    return tree[1]


def leaves(tree: jax.Array) -> jax.Array:
    """``[P]`` float32 leaf values (padding included)."""
    return tree[tree.shape[0] // 2:]


def children_of(tree: jax.Array, nodes: jax.Array) -> jax.Array:
    """``[B, 2]``: the values of the left and right child of each of ``nodes`` (``[B]``).

    Children ``2i, 2i + 1`` are row ``i`` of the tree seen as ``[P, 2]``: one gather of
    pairs, about twice as fast on CPU as two gathers of single values.
    """
    return tree.reshape(-1, 2)[nodes]


def set_leaves(tree: jax.Array, indices: jax.Array, values: jax.Array) -> jax.Array:
    """Sets leaves ``indices`` (``[B]`` int32) to ``values`` (``[B]``, >= 0) and
    recomputes their ancestors from their children.

    An index repeated within one call keeps one of its values (which one is
    unspecified); callers pass equal values for equal indices.
    """
    half = tree.shape[0] // 2
    nodes = indices.astype(jnp.int32) + half
    tree = tree.at[nodes].set(values.astype(tree.dtype))

    def level(_, carry):
        tree, nodes = carry
        nodes = nodes // 2
        children = children_of(tree, nodes)
        return tree.at[nodes].set(children[..., 0] + children[..., 1]), nodes

    # A rolled loop, not a Python one: XLA fuses an unrolled chain of levels into
    # fusions that recompute earlier levels (slower to run and to compile).
    return jax.lax.fori_loop(0, depth(tree), level, (tree, nodes))[0]


def find(tree: jax.Array, targets: jax.Array) -> jax.Array:
    """Leaf index of each target mass ``u`` in ``[0, total]``: ``[B]`` int32.

    Leaf ``j`` is returned for ``u`` in ``[Σ_{i<j} p_i, Σ_{i<=j} p_i)``. Rounding
    never sends a descent into a zero-sum subtree, so a leaf of value 0 is never
    returned while the total is positive, even for ``u`` at or (by rounding) just
    above the total. With a zero total the result is meaningless.
    """
    return find_with_probabilities(tree, targets)[0]


def find_with_probabilities(tree: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``find``, and each found leaf's value over the total (``[B]`` float32).

    The probabilities are computed during the descent, not gathered from the tree
    afterwards: a read of the tree after the descent loop makes XLA copy the whole
    tree (twice) before a later in-place update in the same program, e.g. sampling
    then updating priorities in one learner step.
    """

    def level(_, carry):
        node, u, _ = carry
        children = children_of(tree, node)
        left_sum, right_sum = children[..., 0], children[..., 1]
        go_left = ((u < left_sum) | (right_sum <= 0.0)) & (left_sum > 0.0)
        u = jnp.where(go_left, u, u - left_sum)
        node = jnp.where(go_left, 2 * node, 2 * node + 1)
        value = jnp.where(go_left, left_sum, right_sum)  # == tree[node]
        # Keep u inside the chosen child's mass despite rounding.
        u = jnp.clip(u, 0.0, jnp.nextafter(value, jnp.zeros_like(u)))
        return node, u, value / total(tree)

    # A rolled loop, as in set_leaves: unrolled, XLA fused every level with the ones
    # before it (recomputing them), ~30x slower at 2**20 leaves on CPU.
    u = targets.astype(tree.dtype)
    # The carry is built from ``u`` so that, inside ``shard_map``, it varies over the
    # same mesh axes as the loop's outputs (a device-local tree makes them vary).
    start = ((u * 0).astype(jnp.int32) + 1, u, u * 0 + 1)
    node, _, probability = jax.lax.fori_loop(0, depth(tree), level, start)
    return node - tree.shape[0] // 2, probability
