import functools
import os
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrl_dist import errors, parallel
from jaxrl_dist.agents.ppo import config as config_lib
from jaxrl_dist.anakin import on_device

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

SMALL = dict(num_envs=8, rollout_len=16, total_steps=8 * 16 * 3, num_epochs=2, num_minibatches=4)


@functools.cache
def _run(num_devices, num_updates, chunk, num_seeds, overrides):
    return run_uncached(num_devices, num_updates, chunk, num_seeds, **dict(overrides))


def run(num_devices, num_updates=3, chunk=None, num_seeds=1, **overrides):
    """Cached: several tests compare against the same reference run (compiles dominate)."""
    return _run(num_devices, num_updates, chunk, num_seeds, tuple(sorted(overrides.items())))


@functools.cache
def _learner(num_devices, num_seeds, overrides):
    cfg = config_lib.default_config("CartPole-v1", **dict(SMALL, **dict(overrides)))
    return on_device.OnDeviceLearner(cfg, parallel.make_mesh(num_devices), num_seeds)


@functools.cache
def _chunk(learner, chunk):
    return learner.make_train_chunk(chunk)


def run_uncached(num_devices, num_updates=3, chunk=None, num_seeds=1, **overrides):
    learner = _learner(num_devices, num_seeds, tuple(sorted(overrides.items())))
    init_keys, train_keys = learner.seed_keys(0)
    state = learner.init(init_keys)
    chunk = chunk or num_updates
    step = _chunk(learner, chunk)
    for _ in range(num_updates // chunk):
        state, metrics = step(state, train_keys)
    return jax.device_get(state), jax.device_get(metrics)


def assert_trees_close(a, b, rtol=2e-4, atol=2e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("num_devices", [2, 4])
def test_sharded_equals_unsharded(num_devices):
    assert jax.device_count() >= 4
    single, m1 = run(1)
    sharded, m2 = run(num_devices)
    assert_trees_close(single.params, sharded.params)
    assert_trees_close(single.env_state.obs, sharded.env_state.obs)
    np.testing.assert_allclose(m1["episode_return_sum"], m2["episode_return_sum"], rtol=1e-5)
    # The gradient itself (Adam and clipping hide a gradient scaled by the device count).
    np.testing.assert_allclose(m1["opt/grad_norm"], m2["opt/grad_norm"], rtol=1e-4)
    # Something was learned: parameters moved away from the initial ones.
    learner = _learner(1, 1, ())  # run(1)'s learner: its init is compiled already
    init = jax.device_get(learner.init(learner.seed_keys(0)[0]))
    assert not np.allclose(init.params["policy"]["params"]["MLP_0"]["Dense_0"]["kernel"],
                           single.params["policy"]["params"]["MLP_0"]["Dense_0"]["kernel"])


def test_params_are_replicated_across_devices():
    learner = _learner(4, 1, ())  # run(4)'s learner and program: compiled already
    init_keys, train_keys = learner.seed_keys(0)
    state, _ = _chunk(learner, 3)(learner.init(init_keys), train_keys)
    for leaf in jax.tree.leaves(state.params):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 4
        for s in shards[1:]:
            np.testing.assert_array_equal(shards[0], s)
    assert state.env_state.obs.sharding.spec == P(None, parallel.DATA_AXIS)


def test_env_groups_layout_sharded_equals_unsharded():
    # 8 minibatches of a 4-step rollout: 4 time chunks x 2 env groups.
    overrides = dict(rollout_len=4, num_minibatches=8, total_steps=8 * 4 * 2)
    single, _ = run(1, num_updates=2, **overrides)
    sharded, _ = run(4, num_updates=2, **overrides)
    assert_trees_close(single.params, sharded.params)


def test_chunking_does_not_change_results():
    a, _ = run(1)  # 3 updates in one chunk
    b, _ = run(1, chunk=1)
    assert_trees_close(a.params, b.params, rtol=1e-5, atol=1e-7)
    assert int(a.update_step[0]) == int(b.update_step[0]) == 3


def test_vmapped_seeds_equal_separate_runs():
    one, _ = run(1)
    three, metrics = run(1, num_seeds=3)
    assert_trees_close(jax.tree.map(lambda x: x[:1], three.params), one.params, rtol=1e-5)
    assert not np.allclose(three.params["value"]["params"]["MLP_0"]["Dense_0"]["kernel"][0],
                           three.params["value"]["params"]["MLP_0"]["Dense_0"]["kernel"][1])
    assert metrics["episodes"].shape == (3,)


def test_kl_penalty_objective_adapts_beta():
    state, metrics = run(1, num_updates=3, objective="kl")
    assert np.all(np.isfinite(jax.tree.leaves(state.params)[0]))
    # β starts at 1 and is halved or doubled after each update (or kept).
    assert float(state.agent_state.kl_beta[0]) in {2.0**k for k in range(-3, 4)}
    assert metrics["ppo/kl"][0] >= 0


def test_kl_beta_adapts_to_the_kl_after_the_update():
    # Section 4: d = E[KL[π_old(·|s), π_new(·|s)]] over the rollout after the epochs.
    # One SGD step per update with a large step: the KL before that step is 0, after it
    # far above 1.5 · d_targ, so β must double (it halved when d was the pre-step KL).
    cfg = config_lib.default_config(
        "CartPole-v1", num_envs=8, rollout_len=16, total_steps=128, num_epochs=1,
        num_minibatches=1, objective="kl", lr=0.05, kl_target=0.01, kl_beta_init=1.0,
    )
    learner = on_device.OnDeviceLearner(cfg, parallel.make_mesh(1))
    init_keys, train_keys = learner.seed_keys(0)

    def local(state, key):
        env_ids = learner.local_env_ids()
        _, traj, _ = learner.rollout(state.params, state.env_state, key, env_ids)
        params, _, agent_state, metrics = learner.agent.learn(
            state.params, state.opt_state, state.agent_state, traj, key, env_ids)
        return traj.obs, params, agent_state.kl_beta, metrics

    obs_spec = P(None, None, parallel.DATA_AXIS)  # [S, T, B, ...]
    update = jax.jit(parallel.shard_map(
        jax.vmap(local), learner.mesh, in_specs=(learner.state_specs, P()),
        out_specs=(obs_spec, P(), P(), P()),
    ))
    state = learner.init(init_keys)
    obs, params, kl_beta, metrics = jax.device_get(update(state, train_keys))
    old = jax.device_get(state.params)

    def log_softmax(params):  # plain reference of the categorical policy's log-probs
        logits = np.asarray(learner.policy(jax.tree.map(lambda x: x[0], params), obs[0]))
        z = logits - logits.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(old), log_softmax(params)
    d = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))
    np.testing.assert_allclose(metrics["ppo/update_kl"][0], d, rtol=1e-4)
    assert d > 1.5 * cfg.kl_target
    assert float(kl_beta[0]) == 2.0


def test_continuous_actions_pendulum():
    cfg = config_lib.default_config(
        "Pendulum-v1", num_envs=4, rollout_len=8, total_steps=64, num_epochs=1, num_minibatches=2
    )
    learner = on_device.OnDeviceLearner(cfg, parallel.make_mesh(2))
    init_keys, train_keys = learner.seed_keys(0)
    state, metrics = learner.update(learner.init(init_keys), train_keys)
    assert learner.dist.discrete is False
    assert np.isfinite(metrics["loss/total"]).all()
    assert "log_std" in state.params["policy"]["params"]


@pytest.mark.parametrize(
    ("overrides", "devices", "match"),
    [
        (dict(num_envs=6), 4, "--num_envs must be divisible by the number of devices"),
        (dict(num_envs=4, rollout_len=3, num_minibatches=4), 2, "--num_minibatches=4 does not"),
        (dict(lr=-1.0), 1, "--lr must be > 0"),
        (dict(total_steps=10), 1, "--total_steps must be >="),
        (dict(objective="trpo"), 1, "--objective must be one of clip, kl"),
    ],
)
def test_bad_config_is_one_line_error(overrides, devices, match):
    cfg = config_lib.default_config("CartPole-v1", **dict(SMALL, **overrides))
    with pytest.raises(errors.ConfigError, match=match) as info:
        on_device.OnDeviceLearner(cfg, parallel.make_mesh(devices))
    assert "\n" not in str(info.value)


# Without --xla_cpu_multi_thread_eigen=false (set by `import jaxrl_dist`) this program
# never returned from Execute on jax 0.10.2: a fresh process, made in the background
# (conftest.BackgroundRuns), with a timeout.
HANG_SCRIPT = (
    "import jaxrl_dist, jax\n"
    "from jaxrl_dist import parallel\n"
    "from jaxrl_dist.agents.ppo import config\n"
    "from jaxrl_dist.anakin import on_device\n"
    "cfg = config.default_config('CartPole-v1', num_envs=8, total_steps=8*128*2)\n"
    "l = on_device.OnDeviceLearner(cfg, parallel.make_mesh(4), num_seeds=2)\n"
    "init_keys, keys = l.seed_keys(0)\n"
    "state, metrics = l.make_train_chunk(2)(l.init(init_keys), keys)\n"
    "print(int(jax.device_get(state.update_step)[1]))\n"
)


def background_runs(items, tmp_path_factory):
    del tmp_path_factory
    name = "test_vmapped_seeds_on_a_mesh_over_every_cpu_device_do_not_hang"
    if not any(item.originalname == name for item in items):
        return []
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    return [dict(key="ppo/hang", argv=[sys.executable, "-c", HANG_SCRIPT], env=env,
                 cwd=os.getcwd(), timeout=300)]


def test_vmapped_seeds_on_a_mesh_over_every_cpu_device_do_not_hang(background):
    result = background.result("ppo/hang")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
