"""jaxrl_dist.cpu.conv: the convolution with a backward pass laid out for XLA:CPU equals
lax.conv_general_dilated and its autodiff, for each layer shape of the torsos, inside
lax.scan too; the torsos built with it equal flax's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxrl_dist.cpu import conv
from jaxrl_dist.nn import networks

DN = ("NHWC", "HWIO", "NHWC")

# (input [N, H, W, C], kernel, stride, out channels, padding): the torsos' layers, at
# small batches; 21 with 4/2 and 38 x 37 with 8/4 leave input rows past the last window.
LAYERS = [
    ((2, 84, 84, 4), 8, 4, 8, "VALID"),  # nature conv1 on Atari frames
    ((3, 21, 21, 6), 4, 2, 5, "VALID"),  # nature conv2, odd size: (21 - 4) % 2 != 0
    ((3, 9, 9, 6), 3, 1, 7, "VALID"),  # nature conv3
    ((2, 38, 37, 4), 8, 4, 3, "VALID"),  # odd, non-square input
    ((4, 10, 10, 4), 3, 1, 16, "VALID"),  # MinAtar's cnn torso
    ((2, 12, 12, 4), 3, 1, 6, "SAME"),  # impala's convs (stack and residual blocks)
    ((2, 9, 9, 3), 3, 1, 4, [(1, 2), (0, 1)]),  # explicit, asymmetric pairs
]


def operands(shape, kernel, out, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], out)) * 0.2, jnp.float32)
    return x, w


def value_and_grads(fn, stride, padding, x, w, ct):
    """``fn``'s output and its gradients w.r.t. ``x`` and ``w`` of ``<fn(x, w), ct>``."""
    f = lambda x, w: fn(x, w, (stride, stride), padding, dimension_numbers=DN)
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(ct))


def direct_and_scanned(fn, stride, padding, x, w, ct):
    """``value_and_grads`` once, and inside ``lax.scan`` (the agents' epochs x
    minibatches loop) over two steps, in one compiled program."""
    step = lambda c, xs: (c, value_and_grads(fn, stride, padding, xs[0], w, xs[1]))
    scanned = lax.scan(step, 0, (jnp.stack([x, 2 * x]), jnp.stack([ct, -ct])))[1]
    return value_and_grads(fn, stride, padding, x, w, ct), scanned


def assert_close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("shape,kernel,stride,out,padding", LAYERS)
def test_value_and_gradients_equal_autodiff_of_lax_conv(shape, kernel, stride, out, padding):
    x, w = operands(shape, kernel, out)
    y = lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)
    ct = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
    padding = padding if isinstance(padding, str) else tuple(map(tuple, padding))
    run = jax.jit(direct_and_scanned, static_argnums=(0, 1, 2))
    assert_close(run(conv.conv_general_dilated, stride, padding, x, w, ct),
                 run(lax.conv_general_dilated, stride, padding, x, w, ct))


def test_the_backward_pass_is_laid_out_as_forward_convolutions():
    x, w = operands((2, 20, 20, 4), 4, 3)
    f = lambda x, w: conv.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=DN)
    text = jax.jit(jax.grad(lambda x, w: f(x, w).sum(), (0, 1))).lower(x, w).as_text()
    assert "optimization_barrier" in text
    assert text.count("stablehlo.convolution") == 2  # dx and dW (the forward is unused)


@pytest.mark.parametrize("call", [
    # NCHW/OIHW (lax's default dimension numbers), kernel dilation, feature groups,
    # a precision, a 1-D convolution, integer operands, negative padding.
    lambda f, x, w: f(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), (1, 1), "VALID"),
    lambda f, x, w: f(x, w, (1, 1), "VALID", rhs_dilation=(2, 2), dimension_numbers=DN),
    lambda f, x, w: f(x, w[:, :, :2], (1, 1), "SAME", dimension_numbers=DN,
                      feature_group_count=2),
    lambda f, x, w: f(x, w, (1, 1), "VALID", dimension_numbers=DN,
                      precision=lax.Precision.HIGHEST),
    lambda f, x, w: f(x[:, 0], w[0], (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")),
    lambda f, x, w: f(x.astype(jnp.int32), w.astype(jnp.int32), (1, 1), "VALID",
                      dimension_numbers=DN),
    lambda f, x, w: f(x, w, (1, 1), [(-1, 0), (0, 0)], dimension_numbers=DN),
])
def test_other_convolutions_go_to_lax_unchanged(call, monkeypatch):
    x, w = operands((2, 9, 9, 4), 3, 4)
    monkeypatch.setattr(conv, "conv", None)  # calling the custom path would fail
    np.testing.assert_array_equal(call(conv.conv_general_dilated, x, w),
                                  call(lax.conv_general_dilated, x, w))


def test_bad_shapes_raise_lax_errors():
    x, w = operands((2, 9, 9, 4), 3, 4)
    with pytest.raises(ValueError, match="feature_group_count"):
        conv.conv_general_dilated(x, w[:, :, :3], (1, 1), "VALID", dimension_numbers=DN)


TORSOS = [("cnn", (4, 10, 10, 4)), ("nature", (2, 38, 37, 4)), ("impala", (2, 13, 12, 3))]


def torso(kind, conv_general_dilated=None):
    """``make_torso(kind, 3)``; the IMPALA torso with one narrow stack (a conv and two
    residual blocks: every kind of its layers), which compiles in a fraction of the time."""
    if kind == "impala":
        return networks.ImpalaTorso((4,), conv_general_dilated=conv_general_dilated)
    return networks.make_torso(kind, 3, conv_general_dilated=conv_general_dilated)


@pytest.mark.usefixtures("fast_compile")  # compile-bound; the layers above are optimized
@pytest.mark.parametrize("kind,shape", TORSOS)
def test_each_torso_equals_its_flax_conv_twin(kind, shape):
    plain, tuned = torso(kind), torso(kind, conv.conv_general_dilated)
    obs = jnp.asarray(np.random.default_rng(2).integers(0, 256, shape), jnp.uint8)
    if kind == "cnn":
        obs = obs.astype(jnp.float32) / 255
    shapes = jax.eval_shape(plain.init, jax.random.key(0), obs)
    assert jax.tree.structure(shapes) == jax.tree.structure(
        jax.eval_shape(tuned.init, jax.random.key(0), obs))
    # Gaussian parameters of the torso's shapes (its orthogonal init compiles slowly).
    rng = np.random.default_rng(3)
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.1, jnp.float32), shapes)

    def loss_and_grads(module):
        loss = lambda p: jnp.sum(jnp.sin(module.apply(p, obs)))
        return jax.jit(lambda p: (module.apply(p, obs), jax.grad(loss)(p)))(params)

    want, got = loss_and_grads(plain), loss_and_grads(tuned)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(jnp.abs(b).max())))
