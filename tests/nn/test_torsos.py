"""The Atari papers' pixel torsos (networks.NatureTorso, networks.ImpalaTorso): shapes,
exact parameter counts derived by hand, uint8 scaling, the actor-critic sharing one torso,
a learner step of PPO, IMPALA and Ape-X with each, an A3C worker gradient, and the
refusals."""

import math

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, errors, parallel, types
from jaxrl_dist.agents import base
from jaxrl_dist.anakin import on_device
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.nn import networks
from jaxrl_dist.sebulba import learner as host_learner

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

ATARI = (84, 84, 4)
SMALL_IMAGE = (36, 36, 4)  # the smallest the Nature torso takes
# Learner tests: the smallest images each torso takes quickly (compiles dominate).
LEARNER_IMAGES = {"nature": SMALL_IMAGE, "impala": (12, 12, 4)}
FEATURES = {"nature": 512, "impala": 256}


def conv(k, c_in, c_out):
    """Parameters of a k x k convolution with bias."""
    return k * k * c_in * c_out + c_out


def dense(n_in, n_out):
    return n_in * n_out + n_out


# Mnih et al. 2015: 84 -> 20 (8x8/4) -> 9 (4x4/2) -> 7 (3x3/1), 7*7*64 = 3136 features.
NATURE_LAYERS = {
    "Conv_0": conv(8, 4, 32),  # 8224
    "Conv_1": conv(4, 32, 64),  # 32832
    "Conv_2": conv(3, 64, 64),  # 36928
    "Dense_0": dense(7 * 7 * 64, 512),  # 1606144
}
# Espeholt et al. 2018, Fig. 3: SAME convs keep the size, each 3x3/2 SAME max-pool
# halves it rounding up: 84 -> 42 -> 21 -> 11, so 11*11*32 = 3872 features.
IMPALA_LAYERS = {
    "Conv_0": conv(3, 4, 16),  # 592
    "Conv_1": conv(3, 16, 32),  # 4640
    "Conv_2": conv(3, 32, 32),  # 9248
    **{f"ResidualBlock_{i}": 2 * conv(3, 16, 16) for i in (0, 1)},  # 2 x 4640
    **{f"ResidualBlock_{i}": 2 * conv(3, 32, 32) for i in (2, 3, 4, 5)},  # 4 x 18496
    "Dense_0": dense(11 * 11 * 32, 256),  # 991488
}
IMPALA_PARAMS = 1_089_232


def count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def param_shapes(torso: str, obs_shape=ATARI):
    return jax.eval_shape(networks.make_torso(torso, 3).init, jax.random.key(0),
                          jnp.zeros(obs_shape, jnp.float32))


def random_params(torso: str, obs_shape, scale=0.05):
    """Gaussian parameters of the torso's shapes (no orthogonal init: its Gram-Schmidt
    over a 3136 x 512 kernel would dominate the test's time)."""
    shapes = param_shapes(torso, obs_shape)
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, x.shape) for k, x in
                              zip(keys, leaves, strict=True)])


def test_parameter_counts_equal_the_papers_layer_by_layer():
    assert sum(NATURE_LAYERS.values()) == 1_684_128
    assert sum(IMPALA_LAYERS.values()) == IMPALA_PARAMS
    for torso, layers in (("nature", NATURE_LAYERS), ("impala", IMPALA_LAYERS)):
        tree = param_shapes(torso)["params"]
        assert {name: count(sub) for name, sub in tree.items()} == layers
        assert count(tree) == sum(layers.values())


@pytest.mark.parametrize("torso", ["nature", "impala"])
def test_output_shapes_on_atari_frames(torso):
    params = random_params(torso, ATARI)
    apply = jax.jit(networks.make_torso(torso, 3).apply)
    frames = np.random.default_rng(0).integers(0, 256, (3, 2) + ATARI, np.uint8)
    time_major = apply(params, frames)  # [T, B, H, W, C]
    batch = apply(params, frames.reshape((6,) + ATARI))  # [B, H, W, C]
    assert time_major.shape == (3, 2, FEATURES[torso]) and time_major.dtype == jnp.float32
    assert batch.shape == (6, FEATURES[torso])
    np.testing.assert_allclose(time_major.reshape(batch.shape), batch, rtol=1e-5, atol=1e-6)
    assert (batch >= 0).all() and (batch > 0).any()  # ReLU features


@pytest.mark.parametrize("torso", ["nature", "impala"])
def test_uint8_pixels_are_scaled_and_floats_are_not(torso):
    params = random_params(torso, SMALL_IMAGE, scale=0.3)
    apply = jax.jit(networks.make_torso(torso, 3).apply)
    pixels = np.random.default_rng(1).integers(0, 256, (4,) + SMALL_IMAGE, np.uint8)
    from_uint8 = apply(params, pixels)
    # Equal up to float rounding (XLA may multiply by 1/255 rather than divide).
    np.testing.assert_allclose(
        from_uint8, apply(params, pixels.astype(np.float32) / 255), rtol=1e-3, atol=1e-4
    )
    assert not np.allclose(from_uint8, apply(params, pixels.astype(np.float32)))


def image_spec(obs_shape=SMALL_IMAGE, actions=3):
    return EnvSpec(obs_shape, gymnasium.spaces.Discrete(actions), actions, True)


def make_agent(agent, torso, spec=None, **overrides):
    config = agents.default_config(agent, "CartPole-v1", torso=torso, **overrides)
    return agents.make_agent(config, spec or image_spec())


@pytest.mark.parametrize("torso", ["nature", "impala"])
def test_policy_and_value_share_one_torso(torso):
    agent = make_agent("a2c", torso, hidden_sizes=())
    params = jax.eval_shape(agent.init_params, jax.random.key(0))
    assert set(params) == {"actor_critic"}
    tree = params["actor_critic"]["params"]
    assert set(tree) == {"shared_torso", "policy_head", "value_head"}
    torso_params = count(param_shapes(torso, SMALL_IMAGE))
    features = FEATURES[torso]
    # One torso, then a linear head each: logits (3) and the value (1).
    assert count(tree["shared_torso"]) == torso_params
    assert count(params) == torso_params + dense(features, 3) + dense(features, 1)


def test_one_torso_pass_equals_the_separate_heads():
    image = LEARNER_IMAGES["impala"]
    agent = make_agent("a2c", "impala", image_spec(image), hidden_sizes=(16,))
    params = jax.jit(agent.init_params)(jax.random.key(0))
    rng = np.random.default_rng(2)
    obs, next_obs = (rng.integers(0, 256, (2, 3) + image, np.uint8) for _ in "ab")
    traj = types.Transition(obs, None, None, None, None, next_obs, None, None)

    @jax.jit
    def passes(params, traj):
        logits, values, next_values = agent.policy_and_values(params, traj)
        joint_logits, joint_values = agent.policy_and_value(params, traj.obs)
        return ((logits, agent.policy(params, traj.obs)), (values, agent.value(params, obs)),
                (next_values, agent.value(params, traj.next_obs)), (joint_logits, logits),
                (joint_values, values))

    pairs = passes(params, traj)
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert pairs[0][0].shape == (2, 3, 3) and pairs[1][0].shape == pairs[2][0].shape == (2, 3)


def fake_rollout(agent, params, steps, envs):
    """``Transition`` ``[T, B, H, W, C]`` of random uint8 frames acted on by ``agent``."""
    rng = np.random.default_rng(3)
    image = agent.spec.obs_shape
    obs = rng.integers(0, 256, (steps, envs) + image, np.uint8)
    next_obs = rng.integers(0, 256, obs.shape, np.uint8)
    env_ids = jnp.tile(jnp.arange(envs, dtype=jnp.int32), steps)
    action, log_prob, dist, _ = jax.jit(agent.act)(
        params, obs.reshape((-1,) + image), jax.random.key(4), env_ids
    )
    unflat = lambda x: x.reshape((steps, envs) + x.shape[1:])
    flags = np.zeros((steps, envs), bool)
    return types.Transition(
        obs, unflat(action), jnp.asarray(rng.normal(size=(steps, envs)), jnp.float32),
        flags, flags, next_obs, unflat(log_prob), jax.tree.map(unflat, dist),
    )


LEARNERS = {
    "ppo": dict(num_epochs=1, num_minibatches=1),
    "impala": dict(policy_lag=1),
    "apex": dict(buffer_capacity=64, batch_size=8, learner_steps=1, learning_starts=0),
}


@pytest.mark.parametrize("torso", ["nature", "impala"])
@pytest.mark.parametrize("agent_name", list(LEARNERS))
def test_a_learner_step_on_uint8_images(agent_name, torso):
    steps, envs = 2, 4
    agent = make_agent(agent_name, torso, image_spec(LEARNER_IMAGES[torso]), hidden_sizes=(),
                       num_envs=envs, rollout_len=steps, total_steps=steps * envs * 4,
                       **LEARNERS[agent_name])
    functions = agent.functions()
    learner = host_learner.HostLearner(functions, parallel.make_mesh(1))
    state = learner.init(jax.random.key(0))
    traj = fake_rollout(agent, state.params, steps, envs)
    env_ids = jnp.arange(envs, dtype=jnp.int32)
    batch = functions.actor_step(state.params, traj, env_ids) if functions.actor_step else traj
    new_state, metrics = learner.update(state, (batch,), jax.random.key(5))
    metrics = jax.device_get(metrics)
    assert base.first_nonfinite_place(metrics) is None
    assert all(np.isfinite(v).all() for k, v in metrics.items() if not base.is_nonfinite_flag(k))
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), state.params, new_state.params)
    assert all(jax.tree.leaves(moved))  # the torso and every head learned


@pytest.mark.parametrize("agent,overrides", [
    ("ppo", dict(num_minibatches=1)),
    ("impala", dict(policy_lag=2, num_minibatches=1)),  # acts with the lagged network
    ("apex", dict(learning_starts=0, buffer_capacity=64, batch_size=8)),
])
def test_on_device_update_traces_on_minatar_with_the_impala_torso(agent, overrides):
    config = agents.default_config(agent, "Breakout-MinAtar", torso="impala", hidden_sizes=(),
                                   num_envs=8, rollout_len=4, total_steps=64, **overrides)
    learner = on_device.OnDeviceLearner(config, parallel.make_mesh(1))
    init_keys, train_keys = learner.seed_keys(0)
    state = jax.eval_shape(learner.init, init_keys)  # traced, not compiled: shapes only
    new_state, metrics = jax.eval_shape(learner.update, state, train_keys)
    assert jax.tree.map(lambda x: x.shape, new_state.params) == jax.tree.map(
        lambda x: x.shape, state.params)
    assert "loss/total" in metrics or "loss/td" in metrics
    if agent == "impala":  # the last 2 versions of the whole shared network, per seed
        dense = new_state.agent_state["params"]["shared_torso"]["Dense_0"]["kernel"]
        assert dense.shape == (1, 2, 2 * 2 * 32, 256)  # 10 -> 5 -> 3 -> 2


def test_an_a3c_worker_gradient_reaches_the_shared_torso():
    steps, envs = 2, 2
    agent = make_agent("a3c", "impala", image_spec(LEARNER_IMAGES["impala"]),
                       hidden_sizes=(), num_envs=envs, rollout_len=steps)
    params = jax.jit(agent.init_params)(jax.random.key(0))
    traj = fake_rollout(agent, params, steps, envs)
    grads, metrics = jax.jit(agent.actor_batch)(params, traj, jnp.arange(envs))
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool((g != 0).any()) for g in jax.tree.leaves(grads))
    assert base.first_nonfinite_place(jax.device_get(metrics)) is None


@pytest.mark.parametrize("agent,torso,obs_shape,overrides,match", [
    ("ppo", "nature", (4,), {},
     r"--torso=nature needs image observations \[H, W, C\]; --env=CartPole-v1 has shape "
     r"\(4,\) \(--torso=mlp takes any\)"),
    ("apex", "impala", (8, 8), {}, r"--torso=impala needs image observations \[H, W, C\]"),
    ("impala", "nature", (10, 10, 4), {},
     r"--torso=nature needs images of at least 36x36 \(H, W\); --env=CartPole-v1 has shape "
     r"\(10, 10, 4\)"),
    ("a2c", "nature", (84, 35, 4), {}, "--torso=nature needs images of at least 36x36"),
    ("ppo", "mlp", SMALL_IMAGE, dict(hidden_sizes=()), r"--hidden_sizes must be positive"),
    ("ppo", "cnn", SMALL_IMAGE, dict(hidden_sizes=()), r"--hidden_sizes must be positive"),
])
def test_refusals_are_one_line(agent, torso, obs_shape, overrides, match):
    with pytest.raises(errors.ConfigError, match=match) as info:
        make_agent(agent, torso, image_spec(obs_shape), **overrides)
    assert "\n" not in str(info.value)


def test_apex_learner_sees_the_pixels_the_actors_saw():
    from jaxrl_dist.agents.apex import agent as apex

    agent = make_agent("apex", "impala", image_spec((12, 12, 4)), hidden_sizes=())
    params = agent.init_params(jax.random.key(0))
    rng = np.random.default_rng(6)
    obs = rng.integers(0, 256, (4, 12, 12, 4), np.uint8)
    action = jnp.asarray([0, 1, 2, 0], jnp.int32)
    zeros = jnp.zeros(4, jnp.float32)
    items = apex.ReplayItem(obs, action, zeros, zeros, obs)
    _, (_, q_mean) = agent._loss(params, params, items, jnp.ones(4))
    q_acting = jnp.take_along_axis(agent.q_values(params, obs), action[:, None], axis=-1)
    np.testing.assert_allclose(q_mean, jnp.mean(q_acting), rtol=1e-5)
    # A host env's uint8 pixels are stored as uint8 (not --obs_storage's float32).
    pixel_spec = image_spec((12, 12, 4))._replace(obs_dtype=np.uint8)
    pixel_agent = agents.make_agent(agent.config, pixel_spec)
    assert pixel_agent.obs_storage == jnp.uint8


def test_impala_torso_takes_minatar_sized_images():
    agent = make_agent("apex", "impala", image_spec((10, 10, 4)), hidden_sizes=())
    params = jax.eval_shape(agent.init_params, jax.random.key(0))
    # 10 -> 5 -> 3 -> 2: 2*2*32 features into the dense 256.
    assert params["q"]["params"]["ImpalaTorso_0"]["Dense_0"]["kernel"].shape == (128, 256)
