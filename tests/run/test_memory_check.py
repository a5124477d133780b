"""Memory-sized flags are checked before compiling: the estimate of ``run.memory``
against XLA's own memory analysis; configs beyond the device refused in one line naming
the flag, before anything compiles or is written; a workdir left by a run that stopped
before its first update is reused by the same command."""

import os
import time

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.run import memory
from tests import multiprocess as mp

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


def xla_bytes(path) -> int:
    """Bytes XLA's memory analysis gives for one compiled update of ``path``."""
    state = path.learner.init(path.init_keys)
    analysis = path.learner.make_train_chunk(1).lower(state, path.train_keys).compile() \
        .memory_analysis()
    return (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
            + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)


@pytest.mark.parametrize("agent,overrides", [
    ("ppo", dict(num_envs=1024, rollout_len=16)),
    ("impala", dict(num_envs=64, rollout_len=16, policy_lag=5000)),
    ("apex", dict(num_envs=64, rollout_len=8, buffer_capacity=200_000)),
])
def test_the_estimate_is_within_a_factor_two_of_xla_memory_analysis(agent, overrides):
    config = agents.default_config(agent, "CartPole-v1", total_steps=10**6, **overrides)
    path = training.OnDevicePath(config, training.RunSettings(num_devices=1), lambda s: None)
    parts, device, _ = path.memory_parts()
    estimate = sum(p.nbytes for p in parts)
    assert 0.5 <= estimate / xla_bytes(path) <= 2.0, (parts, xla_bytes(path))


def test_state_bytes_per_device_are_exact():
    config = agents.default_config("apex", "CartPole-v1", num_envs=8, rollout_len=8,
                                   buffer_capacity=8192, learning_starts=1024,
                                   total_steps=10**5)
    path = training.OnDevicePath(config, training.RunSettings(num_devices=4), lambda s: None)
    state = path.learner.init(path.init_keys)
    held = sum(shard.data.nbytes for leaf in jax.tree.leaves(state)
               for shard in leaf.addressable_shards if shard.device == jax.devices()[0])
    from jaxrl_dist.run import files

    abstract = files.abstract_state(path.learner.init, (path.init_keys,),
                                    path.learner.state_shardings)
    assert memory.per_device_bytes(abstract) == held


def test_check_names_the_flag_of_the_largest_part():
    device = jax.devices()[0]
    free, where = memory.free_bytes(device)
    assert free > 0 and "host memory" in where
    parts = [memory.Part("rollout and update buffers", "--num_envs", free // 4),
             memory.Part("lagged parameter copies", "--policy_lag", 2 * free)]
    with pytest.raises(errors.ConfigError) as info:
        memory.check(parts, device, {"--policy_lag": 123, "--num_envs": 8})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--policy_lag=123 needs about ") and "lower --policy_lag" in message
    assert memory.check(parts[:1], device, {}) == free // 4
    # The same total over 100000 seeds, one seed's share fits: --num_seeds is named.
    with pytest.raises(errors.ConfigError) as info:
        memory.check(parts, device, {"--policy_lag": 123, "--num_seeds": 100000})
    assert str(info.value).startswith("--num_seeds=100000 needs about ")
    assert str(info.value).endswith("; lower --num_seeds") and "; one seed " in str(info.value)
    with pytest.raises(errors.ConfigError, match="^--policy_lag=123 needs about "):
        memory.check(parts, device, {"--policy_lag": 123, "--num_seeds": 2})  # 2 x too big


@pytest.mark.parametrize("flags,named", [
    (["--agent=impala", "--policy_lag=10000000"], "--policy_lag=10000000"),
    (["--num_envs=1073741824", "--rollout_len=16", "--total_steps=20000000000"],
     "--num_envs=1073741824"),
    (["--agent=apex", "--buffer_capacity=100000000000", "--total_steps=200000000000"],
     "--buffer_capacity=100000000000"),
])
def test_train_py_refuses_a_config_beyond_memory_before_compiling(tmp_path, flags, named):
    workdir = tmp_path / "run"
    t0 = time.time()
    proc = mp.start(mp.TRAIN, [*flags, f"--workdir={workdir}"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "needs about" in lines[0], err
    assert time.time() - t0 < 60
    assert not workdir.exists()  # nothing written, not even the folder: rerun as it is


def test_a_workdir_left_before_the_first_update_is_reused(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=16,
                                   total_steps=64 * 8)

    def out_of_memory(self, *args):
        raise MemoryError("RESOURCE_EXHAUSTED: out of memory while compiling")

    monkeypatch.setattr(training.OnDevicePath, "prepare", out_of_memory)
    with pytest.raises(MemoryError):
        training.train(config, training.RunSettings(eval_episodes=2), workdir,
                       log=lambda s: None)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    proc = mp.start(mp.TRAIN, ["--num_envs=4", "--rollout_len=16", "--total_steps=512",
                               "--eval_episodes=2", f"--workdir={workdir}"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"reusing --workdir={workdir}: the run there stopped before its first update" in out
    assert np.isfinite(float(out.split("greedy eval return ")[1].split()[0]))
    # A workdir whose run logged a record is not reused silently.
    proc = mp.start(mp.TRAIN, ["--num_envs=4", "--rollout_len=16", "--total_steps=512",
                               f"--workdir={workdir}"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "already holds a run" in err
