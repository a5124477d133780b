"""A2C and IMPALA learners: sharding invariance, policy lag, V-trace in the update."""

import functools

import jax
import numpy as np
import pytest

from jaxrl_dist import agents, errors, parallel
from jaxrl_dist.anakin import on_device

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

SMALL = dict(num_envs=8, rollout_len=8, total_steps=8 * 8 * 4)


def make(agent, num_devices=1, num_seeds=1, env="CartPole-v1", **overrides):
    cfg = agents.default_config(agent, env, **dict(SMALL, **overrides))
    return on_device.OnDeviceLearner(cfg, parallel.make_mesh(num_devices), num_seeds)


@functools.cache
def _run(agent, num_devices, num_updates, chunk, num_seeds, overrides):
    return run_uncached(agent, num_devices, num_updates, chunk, num_seeds, **dict(overrides))


def run(agent, num_devices=1, num_updates=4, chunk=None, num_seeds=1, **overrides):
    """Cached: several tests compare against the same reference run (compiles dominate)."""
    return _run(
        agent, num_devices, num_updates, chunk, num_seeds, tuple(sorted(overrides.items()))
    )


@functools.cache
def _learner(agent, num_devices, num_seeds, overrides):
    return make(agent, num_devices, num_seeds, **dict(overrides))


@functools.cache
def _chunk(learner, chunk):
    return learner.make_train_chunk(chunk)


def run_uncached(agent, num_devices=1, num_updates=4, chunk=None, num_seeds=1, **overrides):
    learner = _learner(agent, num_devices, num_seeds, tuple(sorted(overrides.items())))
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


@pytest.mark.parametrize("agent,overrides,num_devices", [
    ("a2c", {}, 4), ("impala", {}, 2),
    ("a2c", dict(normalize_advantages=True), 2),
    ("impala", dict(num_epochs=2, num_minibatches=2), 4),
])
def test_sharded_equals_unsharded(agent, overrides, num_devices):
    single, m1 = run(agent, 1, **overrides)
    sharded, m2 = run(agent, num_devices, **overrides)
    assert_trees_close(single.params, sharded.params)
    assert_trees_close(single.agent_state, sharded.agent_state)
    np.testing.assert_allclose(m1["episode_return_sum"], m2["episode_return_sum"], rtol=1e-5)
    np.testing.assert_allclose(m1["loss/total"], m2["loss/total"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m1["opt/grad_norm"], m2["opt/grad_norm"], rtol=1e-4)
    learner = _learner(agent, 1, 1, tuple(sorted(overrides.items())))  # run's: compiled
    init = jax.device_get(learner.init(learner.seed_keys(0)[0]))
    assert not np.allclose(init.params["policy"]["params"]["MLP_0"]["Dense_0"]["kernel"],
                           single.params["policy"]["params"]["MLP_0"]["Dense_0"]["kernel"])


@pytest.mark.parametrize("agent", ["a2c", "impala"])
def test_chunking_and_seed_vmapping_do_not_change_results(agent):
    whole, _ = run(agent, num_updates=4)
    chunked, _ = run(agent, num_updates=4, chunk=2)
    assert_trees_close(whole.params, chunked.params, rtol=1e-5, atol=1e-7)
    three, _ = run(agent, num_updates=4, num_seeds=3)
    assert_trees_close(jax.tree.map(lambda x: x[:1], three.params), whole.params, rtol=1e-5)


def test_impala_behaviour_policy_lags_by_policy_lag_updates():
    lag = 2
    params_after = [run("impala", num_updates=u, chunk=1, policy_lag=lag)[0].params["policy"]
                    for u in (1, 2)]
    state, _ = run("impala", num_updates=3, chunk=1, policy_lag=lag)
    # After 3 updates the buffer holds θ_1, θ_2 (oldest first): update 4 acts with θ_2 = θ_{4-lag}.
    for i, expected in enumerate(params_after):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[:, i], state.agent_state), expected,
                           rtol=1e-6, atol=1e-8)


def test_importance_ratios_are_one_on_policy_and_differ_with_lag():
    _, on_policy = run("impala", num_updates=4, policy_lag=0)
    np.testing.assert_allclose(on_policy["vtrace/abs_log_rho_mean"], 0.0, atol=1e-6)
    np.testing.assert_allclose(on_policy["vtrace/rho_mean"], 1.0, atol=1e-6)
    _, lagged = run("impala", num_updates=4, policy_lag=1, lr=3e-3)
    assert lagged["vtrace/abs_log_rho_mean"][0] > 1e-3
    assert lagged["vtrace/rho_max"][0] > 1.0 > lagged["vtrace/rho_min"][0]
    # Several gradient steps per rollout: π drifts from μ within the update too.
    _, reused = run("impala", num_updates=2, policy_lag=0, lr=3e-3, num_epochs=2,
                    num_minibatches=2)
    assert reused["vtrace/abs_log_rho_mean"][0] > 1e-3


def test_impala_on_policy_with_unit_traces_equals_a2c():
    # ρ = 1 and λ = 1: V-trace's vs and pg advantages are A3C's n-step returns and advantages.
    common = dict(optimizer="rmsprop", lr=1e-3, rollout_len=8)
    a2c, _ = run("a2c", gae_lambda=1.0, **common)
    impala, _ = run("impala", policy_lag=0, vtrace_lambda=1.0, **common)
    assert_trees_close(a2c.params, impala.params, rtol=1e-4, atol=1e-6)


def test_continuous_actions():
    for agent in ("a2c", "impala"):
        state, metrics = run(agent, env="Pendulum-v1", num_updates=2)
        assert np.isfinite(metrics["loss/total"]).all()
        assert "log_std" in state.params["policy"]["params"]


@pytest.mark.parametrize("agent,overrides,match", [
    ("impala", dict(policy_lag=-1), "--policy_lag must be an integer >= 0"),
    ("impala", dict(clip_rho_threshold=0.0), "--clip_rho_threshold must be > 0"),
    ("impala", dict(vtrace_lambda=1.5), "--vtrace_lambda must be in"),
    ("impala", dict(num_minibatches=3), "--num_minibatches=3 must divide the 2 envs per device"),
    ("a2c", dict(gae_lambda=-0.1), "--gae_lambda must be in"),
    ("a2c", dict(optimizer="sgd"), "--optimizer must be one of adam, rmsprop"),
    ("a2c", dict(num_envs=6), "--num_envs must be divisible by the number of devices"),
])
def test_bad_config_is_one_line_error(agent, overrides, match):
    with pytest.raises(errors.ConfigError, match=match) as info:
        make(agent, num_devices=4, **overrides)
    assert "\n" not in str(info.value)


def test_cnn_torso_on_minatar_images():
    learner = make("impala", env="Breakout-MinAtar", torso="cnn", hidden_sizes=(32,))
    init_keys, train_keys = learner.seed_keys(0)
    state, metrics = learner.update(learner.init(init_keys), train_keys)
    assert state.params["policy"]["params"]["Torso_0"]["Conv_0"]["kernel"].shape == (1, 3, 3, 4, 16)
    assert np.isfinite(metrics["loss/total"]).all()
    with pytest.raises(errors.ConfigError, match="--torso=cnn needs image observations"):
        make("a2c", torso="cnn")
