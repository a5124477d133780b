"""The reduced XLA optimisation levels (``jaxrl_dist.compile_options``) compute the
same values as XLA's default: initial state, training chunk and evaluation."""

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, compile_options, evaluation, parallel

DEFAULT = {"xla_backend_optimization_level": 3}  # XLA's own default level


def _learner(agent):
    config = agents.default_config(agent, "CartPole-v1", num_envs=8, rollout_len=16)
    return agents.make_learner(config, parallel.make_mesh(1), num_seeds=2)


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_options_are_cpu_only():
    assert compile_options.run_once("cpu") == {"xla_backend_optimization_level": 0}
    assert compile_options.training("cpu") == {"xla_backend_optimization_level": 2}
    assert compile_options.run_once("gpu") == {} == compile_options.training("tpu")


@pytest.mark.parametrize("agent", ["ppo", "impala"])
def test_init_and_training_chunk_match_default_level(agent):
    learner = _learner(agent)
    init_keys, train_keys = learner.seed_keys(0)
    lowered_init = learner.init.lower(init_keys)
    fast_state = lowered_init.compile()(init_keys)  # run_once options (jit's own)
    state = lowered_init.compile(compiler_options=DEFAULT)(init_keys)
    _same(fast_state.params, state.params)
    _same(fast_state.env_state, state.env_state)

    chunk = learner.make_train_chunk(3)
    fast = chunk.lower(fast_state, train_keys).compile()  # training options
    default = chunk.lower(state, train_keys).compile(compiler_options=DEFAULT)
    for _ in range(2):
        fast_state, fast_metrics = fast(fast_state, train_keys)
        state, metrics = default(state, train_keys)
    _same(fast_state.params, state.params)
    _same(fast_metrics, metrics)


def test_evaluation_matches_default_level():
    learner = _learner("ppo")
    state = learner.init(learner.seed_keys(0)[0])
    evaluate = evaluation.make_evaluator(learner.env, learner.policy, learner.dist.mode, 4)
    key = jax.random.key(3)
    lowered = evaluate.lower(state.params, key)
    _same(lowered.compile()(state.params, key),
          lowered.compile(compiler_options=DEFAULT)(state.params, key))
