"""``x @ W`` with a backward pass laid out for XLA's CPU matmul kernels.

Autodiff of ``y = x @ W`` gives the weight gradient as ``dW = xᵀ·dy``, a dot
contracting the *leading* (batch) axis of both operands. XLA's CPU backend
hands dots to its fast kernels only when the left operand contracts its last
axis (row-major, "canonical"); the transposed form falls back to a slower path.
Here the backward pass materialises ``xᵀ`` (an ``optimization_barrier`` keeps XLA
from folding the transpose back into the dot), so all three dots of a layer take
the fast path. Values are the same as autodiff's up to float summation order.
On GPU/TPU the networks use flax's own dot instead (``jaxrl_dist.tuning``).
Figures: ``docs/benchmarks/cpu_tuning.md``.
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w``: ``x`` ``[..., K]`` and ``w`` ``[K, J]``, float32 (or any one float
    dtype), giving ``[..., J]`` of that dtype. Differentiable in both arguments
    (the backward pass above), also inside ``shard_map`` where one operand is
    replicated and the other varies across devices (the replicated one's cotangent
    is summed over the devices, as autodiff of ``jnp.matmul`` does); not a paper's
    equation, a layout of the standard one.

    Raises:
      TypeError / ValueError (from ``jnp.matmul``): ``K`` differs or ``w`` is not 2-D.
    """
    return jnp.matmul(x, w)


def _fwd(x, w):
    return jnp.matmul(x, w), (x, w)


def _varying_axes(x: jax.Array) -> frozenset:
    """Mesh axes along which ``x`` varies inside ``shard_map`` (empty outside it)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)  # jax < 0.10
    if vma is None:
        manual = getattr(aval, "manual_axis_type", None)
        vma = manual.varying if manual is not None else ()
    return frozenset(vma)


def _cotangent_like(ct: jax.Array, primal: jax.Array) -> jax.Array:
    """``ct`` with ``primal``'s device variance: inside ``shard_map`` an invariant
    (replicated) input that meets a varying one is implicitly cast to varying, and
    that cast's transpose is a ``psum`` over the axes it added."""
    extra = _varying_axes(ct) - _varying_axes(primal)
    return jax.lax.psum(ct, tuple(sorted(extra))) if extra else ct


def _bwd(residuals, dy):
    x, w = residuals
    k, j = w.shape
    x_t = jax.lax.optimization_barrier(x.reshape(-1, k).T)  # [K, N], row-major
    dw = jnp.matmul(x_t, dy.reshape(-1, j)).astype(w.dtype)
    dx = jnp.matmul(dy, w.T).astype(x.dtype)
    return _cotangent_like(dx, x), _cotangent_like(dw, w)


matmul.defvjp(_fwd, _bwd)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A ``lax.dot_general`` for ``flax.linen.Dense(dot_general=...)``.

    Dense's own contraction (``lhs`` ``[..., K]``'s last axis with ``rhs`` ``[K, J]``'s
    first, no batch axes, default precision) goes to :func:`matmul`; anything else
    to ``lax.dot_general`` unchanged, with its shapes, dtypes and errors.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    standard = (
        tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
        and not lhs_batch and not rhs_batch and rhs.ndim == 2
        and precision is None and preferred_element_type is None
    )
    if not standard:
        return jax.lax.dot_general(
            lhs, rhs, dimension_numbers, precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return matmul(lhs, rhs)
