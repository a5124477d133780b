"""Random permutations of short axes without a sort.

``jax.random.permutation`` sorts random keys; on XLA's CPU backend that sort is a
comparator-calling merge sort, a visible part of a small PPO update. For the
rollout lengths PPO shuffles (tens to hundreds of steps) the rank of each of ``n``
random keys, counted with an ``[n, n]`` comparison, is the same kind of uniformly
random permutation in a few vectorised kernels. On GPU/TPU PPO uses
``jax.random.permutation`` (``jaxrl_dist.tuning``). Figures:
``docs/benchmarks/cpu_tuning.md``.
"""

import jax
import jax.numpy as jnp

# The comparison is R·n² elements for R permutations of length n; past about 2²² elements
# it falls off a cliff on CPU, so above it we sort.
MAX_RANK_ELEMENTS = 2**22


def permutations(keys: jax.Array, n: int) -> jax.Array:
    """``R`` uniformly random permutations of ``0..n-1``, ``[R, n]`` int32.

    If ``R·n² <= MAX_RANK_ELEMENTS``: row ``r`` is the ranks of ``n`` random uint32
    keys drawn with ``keys[r]`` (ties, of probability < n²/2³³, broken by index, so
    every row is a permutation); otherwise ``jax.random.permutation`` per row. Not the
    same permutations as ``jax.random.permutation`` gives for the same keys. Under an
    outer ``vmap`` the size test sees only this call's ``R``.

    Args:
      keys: ``[R]`` PRNG keys (typed).
      n: the length, an int >= 1.

    Raises:
      ValueError: ``n < 1`` or ``keys`` not 1-D.
    """
    if n < 1:
        raise ValueError(f"permutation length must be >= 1, got {n}")
    if keys.ndim != 1:
        raise ValueError(f"keys must be [R], got shape {keys.shape}")
    if keys.shape[0] * n * n > MAX_RANK_ELEMENTS:
        return jax.vmap(lambda k: jax.random.permutation(k, n).astype(jnp.int32))(keys)
    u = jax.vmap(lambda k: jax.random.bits(k, (n,), jnp.uint32))(keys)  # [R, n]
    idx = jnp.arange(n)
    # before[r, i, j]: key j of row r sorts before key i.
    before = (u[:, None, :] < u[:, :, None]) | (
        (u[:, None, :] == u[:, :, None]) & (idx[None, :] < idx[:, None])
    )
    return jnp.sum(before, axis=2, dtype=jnp.int32)
