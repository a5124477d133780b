"""The reduced XLA:CPU optimisation levels (``jaxrl_dist.cpu.compile_options``) compute the
same values as XLA's default: seed keys, initial state, training chunk and evaluation; the
tier a run compiled in is not part of its identity (a run resumes under another)."""

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, errors, parallel, tuning
from jaxrl_dist.anakin import on_device, training
from jaxrl_dist.cpu import compile_options
from jaxrl_dist.envs import episodes as evaluation

DEFAULT = {"xla_backend_optimization_level": 3}  # XLA's own default level


def _learner(agent):
    config = agents.default_config(agent, "CartPole-v1", num_envs=8, rollout_len=16)
    return on_device.OnDeviceLearner(config, parallel.make_mesh(1), num_seeds=2)


def _same(a, b, rtol=0.0, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_options_are_cpu_only():
    cpu, gpu, tpu = (tuning.for_platform(p) for p in ("cpu", "gpu", "tpu"))
    assert cpu.run_once_options() == {
        "xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    assert cpu.training_options() == {"xla_backend_optimization_level": 2}
    assert cpu.training_options("quick") == {
        "xla_backend_optimization_level": 2, "xla_cpu_use_fusion_emitters": False}
    assert gpu.run_once_options() == {} == tpu.training_options()
    assert gpu.training_options("quick") == {}


def test_chunk_tier_resolves_auto_by_the_whole_runs_env_steps():
    limit = compile_options.QUICK_CHUNK_MAX_ENV_STEPS
    cpu = tuning.for_platform("cpu")
    assert cpu.chunk_tier("auto", limit) == "quick"
    assert cpu.chunk_tier("auto", limit + 1) == "optimized"
    for tier in ("quick", "optimized"):
        assert cpu.chunk_tier(tier, 1) == tier == cpu.chunk_tier(tier, 10**9)
    assert tuning.for_platform("gpu").chunk_tier("quick", 1) == "default"  # no tiers there
    with pytest.raises(errors.ConfigError, match="--chunk_compile must be one of"):
        tuning.for_platform("gpu").chunk_tier("fast", 1)


def test_training_options_defer_to_disable_most_optimizations(fast_compile):
    assert compile_options.training() == {} == compile_options.training(quick=True)
    assert tuning.for_platform("cpu").chunk_tier("quick", 1) == "default"


def test_seed_keys_init_and_training_chunk_match_default_level():
    # PPO's chunk holds every kind of op the other agents' chunks use (scan rollout,
    # vmapped seeds, flat-vector SGD, custom-VJP dense); one agent keeps this short.
    learner = _learner("ppo")
    init_keys, train_keys = learner.seed_keys(0)  # run_once options
    base = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(jax.random.key(0), i)))(
        np.arange(2)
    )
    _same((init_keys, train_keys), (base[:, 0], base[:, 1]))

    lowered_init = learner.init.lower(init_keys)
    state = lowered_init.compile()(init_keys)  # run_once options (jit's own)
    default_init = lowered_init.compile(compiler_options=DEFAULT)(init_keys)
    # FMA contraction; Gram-Schmidt carries the rounding into the last columns (~8e-7).
    _same(state.params, default_init.params, rtol=1e-5, atol=2e-6)
    _same(state.env_state, default_init.env_state, rtol=1e-5, atol=1e-7)

    chunk = learner.make_train_chunk(3)
    fast = chunk.lower(state, train_keys).compile()  # training options (jit's own)
    default = chunk.lower(state, train_keys).compile(compiler_options=DEFAULT)
    quick_state = jax.tree.map(lambda x: x.copy(), state)  # chunks donate their state
    fast_state, default_state = state, jax.tree.map(lambda x: x.copy(), state)
    for _ in range(2):
        fast_state, fast_metrics = fast(fast_state, train_keys)
        default_state, metrics = default(default_state, train_keys)
    # Level 2 may contract a multiply-add differently: equal up to float rounding.
    _same(fast_state.params, default_state.params, rtol=1e-4, atol=1e-7)
    _same(fast_metrics, metrics, rtol=1e-4, atol=1e-6)

    # The quick tier (no fusion emitters) too; it is another program.
    quick = learner.make_train_chunk(3, "quick").lower(quick_state, train_keys).compile()
    assert quick.as_text() != fast.as_text()
    for _ in range(2):
        quick_state, quick_metrics = quick(quick_state, train_keys)
    _same(quick_state.params, default_state.params, rtol=1e-4, atol=1e-7)
    _same(quick_metrics, metrics, rtol=1e-4, atol=1e-6)


def test_evaluation_matches_default_level():
    learner = _learner("ppo")
    state = learner.init(learner.seed_keys(0)[0])
    evaluate = evaluation.make_evaluator(learner.env, learner.policy, learner.dist.mode, 4,
                                         learner.tuning.run_once_options())
    key = jax.random.key(3)
    lowered = evaluate.lower(state.params, key)
    _same(lowered.compile()(state.params, key),
          lowered.compile(compiler_options=DEFAULT)(state.params, key))


class Crash(Exception):
    pass


def test_a_checkpoint_written_in_one_tier_resumes_in_another(tmp_path):
    # 16 updates of 32 env steps: auto picks quick; the run starts optimized, is cut after
    # 8 updates and resumes quick. The tier is how it compiles, not what the run is.
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=8,
                                   total_steps=4 * 8 * 16, num_epochs=1, num_minibatches=2)
    settings = dict(num_devices=1, eval_episodes=2, log_points=8, checkpoint_every=4)
    optimized = training.RunSettings(**settings, chunk_compile="optimized")
    full = training.train(config, optimized, str(tmp_path / "full"), log=lambda s: None)
    assert full["chunk_tier"] == "optimized"

    def crash_after_8_updates(env_steps, metrics):
        if env_steps >= 8 * config.steps_per_update:
            raise Crash

    cut = str(tmp_path / "cut")
    with pytest.raises(Crash):
        training.train(config, optimized, cut, log=lambda s: None,
                       progress_fn=crash_after_8_updates)
    resumed = training.train(config, training.RunSettings(**settings, resume=True,
                                                          chunk_compile="quick"), cut,
                             log=lambda s: None)
    assert resumed["resumed_from"] == 4  # the crash came before the save at update 8
    assert resumed["chunk_tier"] == "quick"
    assert np.isfinite(resumed["eval/episode_return"])
    # The two tiers agree up to float rounding.
    _same(resumed["params"], full["params"], rtol=1e-3, atol=1e-5)
