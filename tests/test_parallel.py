import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxrl_dist import parallel


def _loss(w, x):
    return jnp.mean(w["a"] * x + jnp.square(w["b"]) * x), ()


def _sharded(fn, mesh):
    return jax.jit(parallel.shard_map(fn, mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                                      out_specs=P()))


def test_mean_grad_is_the_gradient_of_the_global_mean_loss():
    mesh = parallel.make_mesh(4)
    w = {"a": jnp.float32(1.0), "b": jnp.float32(2.0)}
    x = jnp.arange(8, dtype=jnp.float32)
    grads = _sharded(lambda w, x: parallel.mean_grad(_loss, w, x)[0], mesh)(w, x)
    expected = jax.grad(lambda w: _loss(w, x)[0])(w)  # the whole batch on one device
    np.testing.assert_allclose(grads["a"], expected["a"], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], expected["b"], rtol=1e-6)
    # The pitfall mean_grad avoids: jax.grad at replicated (invariant) params already
    # sums the local gradients over devices, so a pmean after it gives 4x the mean.
    naive = _sharded(lambda w, x: parallel.pmean(jax.grad(lambda w: _loss(w, x)[0])(w)), mesh)
    np.testing.assert_allclose(naive(w, x)["a"], 4 * expected["a"], rtol=1e-6)
