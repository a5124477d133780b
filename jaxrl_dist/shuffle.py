"""Random permutations of short axes without a sort.

``jax.random.permutation`` sorts random keys; on XLA's CPU backend that sort is a
comparator-calling merge sort, about 3.5 % of a PPO CartPole update at 4 × 128
(``perf``, BUILD.md). For the rollout lengths PPO shuffles (tens to hundreds of
steps) the rank of each of ``n`` random keys, counted with an ``[n, n]`` comparison,
is the same kind of uniformly random permutation in a few vectorised kernels.
"""

import jax
import jax.numpy as jnp

# Above this length the O(n²) comparison costs more than the sort.
MAX_RANK_LENGTH = 256


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``0..n-1``, ``[n]`` int32.

    For ``n <= MAX_RANK_LENGTH``: the ranks of ``n`` random uint32 keys (ties, of
    probability < n²/2³³, broken by index, so the result is always a permutation);
    above it, ``jax.random.permutation``. Not the same permutation as
    ``jax.random.permutation(key, n)`` for the same key.

    Args:
      key: a PRNG key (typed or raw).
      n: the length, an int >= 1.

    Raises:
      ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"permutation length must be >= 1, got {n}")
    if n > MAX_RANK_LENGTH:
        return jax.random.permutation(key, n).astype(jnp.int32)
    u = jax.random.bits(key, (n,), jnp.uint32)
    idx = jnp.arange(n)
    # before[i, j]: key j sorts before key i.
    before = (u[None, :] < u[:, None]) | (
        (u[None, :] == u[:, None]) & (idx[None, :] < idx[:, None])
    )
    return jnp.sum(before, axis=1, dtype=jnp.int32)
