"""The hand-written backward pass of ``matmul`` equals autodiff of ``x @ w``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.cpu import matmul
from jaxrl_dist.nn import networks


@pytest.mark.parametrize("x_shape", [(128, 64), (16, 8, 4), (5, 3)])
def test_matmul_value_and_gradients_equal_autodiff(x_shape):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, (x_shape[-1], 7))
    cotangent = jax.random.normal(kg, x_shape[:-1] + (7,))

    def loss(fn, x, w):
        return jnp.sum(fn(x, w) * cotangent)

    np.testing.assert_allclose(matmul.matmul(x, w), x @ w, rtol=1e-5, atol=1e-5)
    ours = jax.jit(jax.grad(lambda x, w: loss(matmul.matmul, x, w), argnums=(0, 1)))(x, w)
    ref = jax.grad(lambda x, w: loss(jnp.matmul, x, w), argnums=(0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_matmul_under_vmap_matches_per_example_gradients():
    x = jax.random.normal(jax.random.key(1), (3, 10, 4))
    w = jax.random.normal(jax.random.key(2), (3, 4, 2))

    def grad_w(fn):
        return jax.vmap(jax.grad(lambda x, w: jnp.sum(jnp.tanh(fn(x, w))), argnums=1))(x, w)

    np.testing.assert_allclose(grad_w(matmul.matmul), grad_w(jnp.matmul), rtol=1e-5, atol=1e-5)


def test_dense_uses_it_and_other_contractions_fall_back():
    mlp = networks.MLP((8,), 3, dot_general=matmul.dense_dot_general)
    x = jnp.ones((6, 5))
    params = mlp.init(jax.random.key(0), x)

    def ref_apply(p, x):
        h = jnp.tanh(x @ p["params"]["Dense_0"]["kernel"] + p["params"]["Dense_0"]["bias"])
        return h @ p["params"]["Dense_1"]["kernel"] + p["params"]["Dense_1"]["bias"]

    g = jax.grad(lambda p: jnp.sum(mlp.apply(p, x) ** 2))(params)
    g_ref = jax.grad(lambda p: jnp.sum(ref_apply(p, x) ** 2))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g, g_ref)
    # A contraction that is not Dense's own goes to lax.dot_general unchanged.
    a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
    dims = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_allclose(
        matmul.dense_dot_general(a, b, dims), jax.lax.dot_general(a, b, dims)
    )


@pytest.mark.parametrize("x_varying", [False, True])
@pytest.mark.parametrize("w_varying", [False, True])
def test_gradients_inside_shard_map_match_autodiff(x_varying, w_varying):
    # Inside shard_map an operand may be device-invariant (replicated) while the other
    # varies; a custom VJP must return cotangents of its inputs' types (the transpose
    # of the implicit invariant -> varying cast is a psum over the devices).
    from jax.sharding import PartitionSpec as P

    from jaxrl_dist import parallel

    mesh = parallel.make_mesh(4)
    x = jax.random.normal(jax.random.key(3), (4, 8, 5))  # [devices, N, K]
    w = jax.random.normal(jax.random.key(4), (5, 3))

    def grads(fn):
        def local(x, w):
            x = x[0]
            if x_varying:
                x = x * (1.0 + parallel.axis_index())
            if w_varying:
                w = w * (1.0 + parallel.axis_index())
            gx, gw = jax.grad(lambda x, w: jnp.sum(jnp.tanh(fn(x, w))), argnums=(0, 1))(x, w)
            return parallel.psum(gx)[None], parallel.psum(gw)

        return jax.jit(parallel.shard_map(
            local, mesh, in_specs=(P(parallel.DATA_AXIS) if x_varying else P(), P()),
            out_specs=(P(parallel.DATA_AXIS) if x_varying else P(), P()),
        ))(x if x_varying else x[:1], w)

    for a, b in zip(grads(matmul.matmul), grads(jnp.matmul), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
