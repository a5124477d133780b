"""The one CPU/plain switch (``jaxrl_dist.tuning``): a program built for another platform
holds nothing of ``jaxrl_dist.cpu``; one built for CPU does; both compute the same."""

import dataclasses

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, parallel, tuning, types
from jaxrl_dist.anakin import on_device, training
from jaxrl_dist.cpu import compile_options, conv, matmul, shuffle
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.sebulba import learner as host_learner

CPU_HELPERS = (
    (matmul, "matmul"), (matmul, "dense_dot_general"), (shuffle, "permutations"),
    (conv, "conv"), (conv, "conv_general_dilated"),
    (compile_options, "run_once"), (compile_options, "training"),
    (compile_options, "chunk_tier"),
)


@pytest.fixture
def cpu_calls(monkeypatch):
    """Records every call of a CPU-only helper (module attributes are looked up at call
    time, so the spies see every use made after they are set)."""
    calls = []
    for module, name in CPU_HELPERS:
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return calls


def _lowered_ppo_chunk(platform: str) -> tuple[str, object]:
    """The StableHLO of one PPO update (rollout, GAE, shuffled minibatch SGD) built for
    ``platform``, lowered on this machine's CPU devices."""
    config = agents.default_config("ppo", "CartPole-v1", num_envs=8, rollout_len=16,
                                   num_minibatches=2, num_epochs=2)
    learner = on_device.OnDeviceLearner(config, parallel.make_mesh(1), num_seeds=1,
                                  tuning_=tuning.for_platform(platform))
    init_keys, train_keys = learner.seed_keys(0)
    state = jax.eval_shape(learner.init, init_keys)
    chunk = learner.make_train_chunk(1, learner.tuning.chunk_tier("auto", 1))
    return chunk.lower(state, train_keys).as_text(), learner


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_a_ppo_update_for_an_accelerator_uses_no_cpu_helper(platform, cpu_calls):
    text, learner = _lowered_ppo_chunk(platform)
    assert "optimization_barrier" not in text
    assert "stablehlo.sort" in text  # jax.random.permutation's shuffle
    assert cpu_calls == []
    assert learner.agent.policy_net.dot_general is None  # flax Dense's own dot
    assert learner.tuning.run_once_options() == {} == learner.tuning.training_options()
    assert cpu_calls == []


def test_a_ppo_update_for_cpu_uses_the_cpu_helpers(cpu_calls):
    text, learner = _lowered_ppo_chunk("cpu")
    assert "optimization_barrier" in text  # the Dense backward layout
    assert "stablehlo.sort" not in text  # the sort-free shuffle
    assert {"dense_dot_general", "matmul", "permutations", "run_once", "training",
            "chunk_tier"} <= set(cpu_calls)
    assert learner.tuning.training_options() == {"xla_backend_optimization_level": 2}


def _lowered_ppo_nature_update(platform: str) -> str:
    """The StableHLO of one host-learner PPO update (the Atari path) with the Nature
    torso on 36x36x4 uint8 frames (the smallest it takes), built for ``platform``."""
    config = agents.default_config("ppo", "CartPole-v1", torso="nature", hidden_sizes=(),
                                   num_envs=2, rollout_len=2, num_epochs=1, num_minibatches=1)
    spec = EnvSpec((36, 36, 4), gymnasium.spaces.Discrete(3), 3, True)
    agent = agents.make_agent(config, spec, 1, tuning.for_platform(platform))
    learner = host_learner.HostLearner(agent.functions(), parallel.make_mesh(1))
    state = jax.eval_shape(learner.init, jax.random.key(0))
    s = lambda shape, dtype: jax.ShapeDtypeStruct((2, 2) + shape, dtype)
    traj = types.Transition(s((36, 36, 4), jnp.uint8), s((), jnp.int32), s((), jnp.float32),
                            s((), jnp.bool_), s((), jnp.bool_), s((36, 36, 4), jnp.uint8),
                            s((), jnp.float32), s((3,), jnp.float32))
    return jax.jit(learner.update).lower(state, (traj,), jax.random.key(1)).as_text()


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_a_nature_torso_update_for_an_accelerator_uses_flax_conv(platform, cpu_calls):
    text = _lowered_ppo_nature_update(platform)
    assert "stablehlo.convolution" in text and "optimization_barrier" not in text
    assert cpu_calls == []


def test_a_nature_torso_update_for_cpu_uses_the_cpu_conv(cpu_calls):
    text = _lowered_ppo_nature_update("cpu")
    assert "optimization_barrier" in text  # the convolutions' backward layout
    assert {"conv_general_dilated", "conv", "dense_dot_general", "matmul"} <= set(cpu_calls)


def test_the_mesh_decides():
    mesh = parallel.make_mesh(1)
    assert tuning.for_mesh(mesh).platform == jax.devices()[0].platform == "cpu"
    learner = on_device.OnDeviceLearner(
        agents.default_config("a2c", "CartPole-v1", num_envs=4, rollout_len=5), mesh
    )
    assert learner.tuning.cpu and learner.agent.tuning.cpu


@pytest.mark.parametrize("agent", ["a2c", "apex"])
def test_plain_and_cpu_tuned_updates_compute_the_same(agent):
    # No shuffle in A2C's or Ape-X's update (PPO's permutations differ by design): the
    # plain program equals the CPU-tuned one up to float rounding, on the same devices.
    overrides = dict(num_envs=4, rollout_len=8, total_steps=4 * 8 * 4)
    if agent == "apex":
        overrides.update(buffer_capacity=256, batch_size=16, learning_starts=32)
    config = agents.default_config(agent, "CartPole-v1", **overrides)
    results = []
    for platform in ("cpu", "gpu"):
        learner = on_device.OnDeviceLearner(config, parallel.make_mesh(1),
                                      tuning_=tuning.for_platform(platform))
        init_keys, train_keys = learner.seed_keys(0)
        state, _ = learner.make_train_chunk(3)(learner.init(init_keys), train_keys)
        results.append(jax.device_get(state.params))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


class Crash(Exception):
    pass


def test_a_run_of_plain_programs_resumes_in_cpu_tuned_ones(tmp_path):
    # What a run moved from a GPU to a CPU meets: the checkpoint was written by the plain
    # programs (built as for an accelerator), the resumed run compiles the CPU-tuned ones.
    config = agents.default_config("a2c", "CartPole-v1", num_envs=4, rollout_len=5,
                                   total_steps=4 * 5 * 16)
    settings = training.RunSettings(num_devices=1, eval_episodes=2, log_points=8,
                                    checkpoint_every=4)
    full = training.train(config, settings, str(tmp_path / "full"), log=lambda s: None)

    def crash_after_8_updates(env_steps, metrics):
        if env_steps >= 8 * config.steps_per_update:
            raise Crash

    cut = str(tmp_path / "cut")
    with pytest.raises(Crash):
        training.train(config, settings, cut, log=lambda s: None,
                       progress_fn=crash_after_8_updates, tuning_=tuning.for_platform("gpu"))
    resumed = training.train(config, dataclasses.replace(settings, resume=True), cut,
                             log=lambda s: None)
    assert resumed["resumed_from"] == 4
    assert resumed["chunk_tier"] != "default"  # compiled for CPU this time
    for a, b in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(full["params"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
