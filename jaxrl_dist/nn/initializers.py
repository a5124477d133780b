"""Orthogonal weight initialisation without LAPACK.

``jax.nn.initializers.orthogonal`` calls ``jnp.linalg.qr``, which on CPU is a
LAPACK custom call. In jaxlib 0.10.2 a batched LAPACK call (a QR under ``vmap``
over seeds) fans its batch out onto XLA's intra-op thread pool and blocks the
calling pool thread until the pieces finish; when several such calls run at
once (one per layer, per device of a CPU mesh) every pool thread ends up
waiting and the program never returns. We saw exactly this: a 3-seed CartPole
run hung forever in CI, and 2 seeds on 4 forced CPU devices hung in most tries
(native stacks: ``lapack_sgeqrf_ffi`` -> ``ParallelBatchMap`` ->
``BlockingCounter::Wait`` on every pool thread).

This initializer draws the same Gaussian matrix as JAX's and orthonormalises it
with classical Gram-Schmidt applied twice ("CGS2", numerically as orthogonal as
Householder QR for these sizes) in plain XLA ops. Gram-Schmidt yields the QR
factorisation whose ``R`` has a positive diagonal, which is exactly what JAX
returns after its sign correction, so the weights equal
``jax.nn.initializers.orthogonal``'s for the same key up to float rounding
(tested), and the distribution is Haar (Mezzadri 2007, arXiv math-ph/0609050,
sec. 5).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _orthonormalize_columns(a: jax.Array) -> jax.Array:
    """Q of the QR factorisation of ``a`` ``[m, n]`` (m >= n) with ``diag(R) > 0``."""
    _, n = a.shape
    if n == 1:
        # One column needs no projection. Written out rather than as a one-trip loop:
        # XLA unrolls that loop, and the fused zero projections left in it were compiled
        # into code whose rounding depended on the CPU thread count when run-once
        # programs skip the fusion emitters (cpu.compile_options), so PPO's value head
        # [64, 1] differed by 3e-8 between 1 and 2 XLA threads for 4 x 128 envs.
        return a / jnp.sqrt(jnp.sum(a * a))

    def add_column(j, q):
        v = a[:, j]
        for _ in range(2):  # second pass removes what rounding left of q's span
            v = v - q @ (q.T @ v)  # columns j.. of q are still zero
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, n, add_column, jnp.zeros_like(a))


def orthogonal(scale: float = 1.0, column_axis: int = -1):
    """Orthogonal initializer, a drop-in for ``jax.nn.initializers.orthogonal``.

    Args:
      scale: multiplies the (semi-)orthogonal matrix.
      column_axis: the axis whose slices are orthonormal.

    Returns:
      ``init(key, shape, dtype=float32) -> Array[shape]`` with orthonormal rows
      or columns (whichever side is smaller), times ``scale``.

    Raises:
      ValueError: ``shape`` has fewer than 2 dimensions.
    """

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a shape of rank >= 2, got {shape}")
        n_cols = shape[column_axis]
        n_rows = math.prod(shape) // n_cols
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _orthonormalize_columns(z)
        if n_rows < n_cols:
            q = q.T
        q = q.reshape(tuple(np.delete(shape, column_axis)) + (n_cols,))
        return jnp.asarray(scale, dtype) * jnp.moveaxis(q, -1, column_axis)

    return init
