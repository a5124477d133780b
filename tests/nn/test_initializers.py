"""The LAPACK-free orthogonal initializer equals JAX's and keeps programs LAPACK-free."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import parallel
from jaxrl_dist.agents.ppo import config as config_lib
from jaxrl_dist.anakin import on_device
from jaxrl_dist.nn import initializers

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (3, 5, 7), (128, 1)])
@pytest.mark.parametrize("scale", [1.0, np.sqrt(2.0), 0.01])
def test_equals_jax_orthogonal(shape, scale):
    key = jax.random.key(7)
    ours = initializers.orthogonal(scale)(key, shape)
    theirs = jax.nn.initializers.orthogonal(scale)(key, shape)
    np.testing.assert_allclose(ours, theirs, atol=2e-5 * max(scale, 1.0))


def test_columns_orthonormal_to_float_precision():
    q = initializers.orthogonal()(jax.random.key(0), (512, 256))
    np.testing.assert_allclose(q.T @ q, jnp.eye(256), atol=2e-6)


def test_rank_one_shape_is_rejected():
    with pytest.raises(ValueError, match="rank >= 2"):
        initializers.orthogonal()(jax.random.key(0), (8,))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_learner_programs_have_no_lapack_calls(env):
    # Batched LAPACK calls wedge XLA's CPU thread pool in jaxlib 0.10.2 (see
    # jaxrl_dist/initializers.py): init, update and evaluation must not use them.
    cfg = config_lib.default_config(env, num_envs=8, rollout_len=8, total_steps=8 * 8 * 2,
                                    num_minibatches=2)
    learner = on_device.OnDeviceLearner(cfg, parallel.make_mesh(2), num_seeds=3)
    init_keys, train_keys = learner.seed_keys(0)
    init = learner.init.lower(init_keys)
    state = init.out_info  # shapes and shardings: lowering needs no compiled init
    texts = [init.as_text(), learner.make_train_chunk(1).lower(state, train_keys).as_text()]
    for text in texts:
        assert "lapack" not in text.lower()
        assert "custom_call" not in text
