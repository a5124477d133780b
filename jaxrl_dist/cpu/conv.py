"""2-D convolutions with a backward pass laid out for XLA:CPU's convolution kernels.

Autodiff of ``y = conv(x, W)`` computes the weight gradient ``dW`` as a convolution
of ``x`` with ``dy`` whose "batch" is the contracted dimension (``x``'s images) and
whose "features" are the input channels. Outside a loop XLA:CPU recognises that
form and runs it on its fast convolution kernels; inside ``jax.lax.scan`` (the
agents' epochs x minibatches loop, even when it runs once) it does not, and the
weight gradient falls back to a generic loop that is an order of magnitude slower.

Here the backward pass builds both gradients as plain forward-style convolutions
(NHWC input, HWIO kernel) on explicitly transposed operands, behind an
``optimization_barrier`` so that XLA cannot fold the transposes back in:

- ``dW``: ``x`` as ``[C, H, W, N]`` (images become features) convolved with ``dy``
  as the kernel ``[H', W', N, O]`` dilated by the stride, VALID; the result
  ``[C, kh, kw, O]`` transposed to HWIO.
- ``dx``: ``dy`` dilated by the stride, padded by ``k - 1`` (plus the rows and
  columns the strided forward pass never reached), convolved with the spatially
  flipped kernel with its in/out channels swapped.

Same function and gradients as autodiff's, up to float summation order. SAME and
explicit padding pad the input with ``jnp.pad`` first (its gradient is autodiff's
slice), then run the VALID convolution above. On GPU/TPU the networks use flax's
own convolution instead (``jaxrl_dist.tuning``).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxrl_dist.cpu.matmul import _cotangent_like

# NHWC input, HWIO kernel, NHWC output: flax.linen.Conv's layout for 2-D convolutions.
_DN = ("NHWC", "HWIO", "NHWC")
_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                      out_spec=(0, 3, 1, 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, w: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """The VALID convolution of ``x`` ``[N, H, W, C]`` with ``w`` ``[kh, kw, C, O]``
    (one float dtype, ``H >= kh``, ``W >= kw``) at ``strides`` ``(sh, sw)``:
    ``[N, (H - kh) // sh + 1, (W - kw) // sw + 1, O]`` of that dtype, as
    ``lax.conv_general_dilated`` computes it. Differentiable in ``x`` and ``w`` (the
    backward pass above), also inside ``shard_map`` with a replicated kernel (its
    cotangent is summed over the devices, as autodiff's is).

    Raises:
      TypeError / ValueError (from ``lax.conv_general_dilated``): the shapes or dtypes
      do not fit.
    """
    return lax.conv_general_dilated(x, w, strides, "VALID", dimension_numbers=_DN)


def _fwd(x, w, strides):
    return conv(x, w, strides), (x, w)


def _bwd(strides, residuals, dy):
    x, w = residuals
    (sh, sw), (kh, kw) = strides, w.shape[:2]
    (height, width), (out_h, out_w) = x.shape[1:3], dy.shape[1:3]
    # Input rows/columns past the last window (the strides did not reach them).
    reach_h, reach_w = (out_h - 1) * sh + kh, (out_w - 1) * sw + kw
    w_t = lax.optimization_barrier(jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)))
    dx = lax.conv_general_dilated(
        dy, w_t, (1, 1), [(kh - 1, kh - 1 + height - reach_h), (kw - 1, kw - 1 + width - reach_w)],
        lhs_dilation=strides, dimension_numbers=_DN,
    )
    x_t = jnp.transpose(x[:, :reach_h, :reach_w], (3, 1, 2, 0))  # [C, H, W, N]
    dy_t = jnp.transpose(dy, (1, 2, 0, 3))  # [H', W', N, O] as an HWIO kernel
    x_t, dy_t = lax.optimization_barrier((x_t, dy_t))
    dw = lax.conv_general_dilated(x_t, dy_t, (1, 1), "VALID", rhs_dilation=strides,
                                  dimension_numbers=_DN)  # [C, kh, kw, O]
    dw = jnp.transpose(dw, (1, 2, 0, 3))
    return _cotangent_like(dx.astype(x.dtype), x), _cotangent_like(dw.astype(w.dtype), w)


conv.defvjp(_fwd, _bwd)


def _explicit_padding(lhs, rhs, strides, padding) -> list[tuple[int, int]] | None:
    """``padding`` (``"VALID"``, ``"SAME"``, ``"SAME_LOWER"`` or ``(low, high)`` pairs)
    as two non-negative ``(low, high)`` pairs that leave the padded input at least the
    kernel's size, or None when it is none of these."""
    if isinstance(padding, str):
        try:
            pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
        except (TypeError, ValueError, RuntimeError):
            return None
    else:
        pads = [tuple(p) for p in padding]
    if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
        return None
    for size, (lo, hi), k in zip(lhs.shape[1:3], pads, rhs.shape[:2], strict=True):
        if size + lo + hi < k:
            return None
    return [(int(lo), int(hi)) for lo, hi in pads]


def _is_standard(lhs, rhs, strides, dilations, dimension_numbers, groups) -> bool:
    """True for the convolutions of the networks: 4-D float NHWC input, HWIO kernel of
    its channels and dtype, positive strides, no dilation, one feature group."""
    if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != rhs.dtype:
        return False
    if not jnp.issubdtype(lhs.dtype, jnp.floating) or lhs.size == 0 or rhs.size == 0:
        return False
    if lhs.shape[3] != rhs.shape[2] or len(strides) != 2 or min(strides) < 1:
        return False
    if any(d is not None and tuple(d) != (1, 1) for d in dilations) or groups != (1, 1):
        return False
    try:
        numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    except (TypeError, ValueError):
        return False
    return numbers == _NHWC_HWIO


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding,
    lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
    precision=None, preferred_element_type=None, **kwargs,
) -> jax.Array:
    """A ``lax.conv_general_dilated`` for ``flax.linen.Conv(conv_general_dilated=...)``.

    Conv's own 2-D convolutions (``lhs`` ``[N, H, W, C]`` float, ``rhs`` ``[kh, kw, C,
    O]`` of the same dtype, NHWC/HWIO dimension numbers, any strides, padding
    ``"VALID"``, ``"SAME"`` or non-negative ``(low, high)`` pairs, no dilation, one
    feature group, default precision) go to :func:`conv`, after ``jnp.pad`` for
    padding; the result is ``[N, H', W', O]`` of ``lhs``'s dtype. Anything else goes
    to ``lax.conv_general_dilated`` unchanged, with its shapes, dtypes and errors.
    """
    strides = tuple(int(s) for s in window_strides)
    pads = None
    if (_is_standard(lhs, rhs, strides, (lhs_dilation, rhs_dilation), dimension_numbers,
                     (feature_group_count, batch_group_count))
            and precision is None and preferred_element_type is None and not kwargs):
        pads = _explicit_padding(lhs, rhs, strides, padding)
    if pads is not None:
        if any(lo or hi for lo, hi in pads):
            lhs = jnp.pad(lhs, [(0, 0), *pads, (0, 0)])
        return conv(lhs, rhs, strides)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type, **kwargs,
    )
