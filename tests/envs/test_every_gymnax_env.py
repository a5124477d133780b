"""Every registered gymnax env either trains or is refused with a one-line ConfigError.

Each case runs ``training.train`` for 3 tiny updates (4 envs over 2 devices, so the
env step runs inside ``jax.shard_map``; 4-step rollouts; one greedy eval episode)
and checks the run's metrics and parameters are finite. Which (agent, env) pairs are
refused is worked out here from the env's spaces, independently of the CLI: a
Discrete observation space (FrozenLake-misc) for every agent, a Box action space for
Ape-X; MNISTBandit-bsuite when its MNIST files are not in /tmp/mnist (gymnax
downloads them when the env is built; these tests never download).

Cost (2-core CPU, ``fast_compile``): ~3-12 s per case, compile-bound. The default
suite runs PPO on ``DEFAULT_ENVS``, one env per distinct code path (~1 min with the
Asterix comparison); PPO on the other envs and the whole agent x env matrix (~8 min
more) are ``@pytest.mark.slow``: ``pytest -m slow tests/test_every_gymnax_env.py``.

Also here: ``gymnax_env.per_device``, which lets gymnax code that is not written for
``shard_map``'s varying-axes types (Asterix-MinAtar's ``while_loop``) run inside it,
and a check that it changes no value (sharded == unsharded on Asterix).
"""

import functools
import os

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrl_dist import agents, errors, parallel
from jaxrl_dist.anakin import training
from jaxrl_dist.envs import gymnax_env

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

ENVS = tuple(gymnax.registered_envs)
TINY = dict(num_envs=4, rollout_len=4, total_steps=4 * 4 * 3, hidden_sizes=(16,))
PER_AGENT = {
    "ppo": dict(num_epochs=1, num_minibatches=2),
    "impala": dict(num_minibatches=1),
    "a2c": {},
    "apex": dict(buffer_capacity=64, batch_size=8, learning_starts=16, learner_steps=1,
                 target_update_period=2),
}
MNIST = "MNISTBandit-bsuite"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Metrics of the episodes that finished in a log window: NaN when none did.
EPISODE_METRICS = ("train/episode_return", "train/episode_return_per_seed",
                   "train/episode_length")


# PPO on these in the default suite: one env per distinct path through the adapter,
# the configs and the refusals (the rest are more of the same; they run under slow).
DEFAULT_ENVS = (
    "CartPole-v1",  # classic control, discrete actions (its own default config)
    "Pendulum-v1",  # continuous actions, clipped to the bounds (the continuous config)
    "Reacher-misc",  # continuous actions with more than one dimension
    "Breakout-MinAtar",  # MinAtar image observations (the MinAtar config)
    "Asterix-MinAtar",  # its step goes through per_device (and test_sharded_... reuses it)
    "Catch-bsuite",  # int32 (not float) 2-D observations
    "BernoulliBandit-misc",  # max_steps_in_episode is a float (100.0)
    "FrozenLake-misc",  # refused: Discrete observation space
    MNIST,  # refused when its MNIST files are absent (no downloads)
)
assert set(DEFAULT_ENVS) <= set(ENVS), set(DEFAULT_ENVS) - set(ENVS)

CASES = [
    pytest.param(agent, env, id=f"{agent}-{env}",
                 marks=() if agent == "ppo" and env in DEFAULT_ENVS else (pytest.mark.slow,))
    for agent in agents.AGENTS if agent != "a3c"  # A3C needs Ray workers: test_ray_actors
    for env in ENVS
]


def no_downloads(monkeypatch):
    from gymnax.utils import load_mnist

    def refuse(url, *_):
        raise OSError(f"no downloads in tests ({url})")

    monkeypatch.setattr(load_mnist, "urlretrieve", refuse)


def expected_refusal(agent: str, env_id: str) -> str | None:
    """What the refusal must say, or None where the pair must train."""
    if env_id == MNIST and not all(
        os.path.isfile(os.path.join("/tmp/mnist", f)) for f in MNIST_FILES
    ):
        return f"--env={env_id} could not be created: "
    env, params = gymnax.make(env_id)
    if type(env.observation_space(params)).__name__ != "Box":
        return "observation space; only Box is supported"
    if agent == "apex" and type(env.action_space(params)).__name__ != "Discrete":
        return f"--agent=apex acts in Discrete action spaces; --env={env_id} has Box"
    return None


def tiny_config(agent: str, env_id: str):
    return agents.default_config(agent, env_id, **TINY, **PER_AGENT[agent])


@functools.cache
def train(agent: str, env_id: str, num_devices: int = 2):
    """``training.train``'s summary for the tiny config (cached: the Asterix comparison
    reuses the parametrized run)."""
    settings = training.RunSettings(num_devices=num_devices, eval_episodes=1, log_points=3,
                                    progress_every_s=1e9)
    return training.train(tiny_config(agent, env_id), settings, None, log=lambda s: None)


def assert_finite_run(summary, config):
    assert summary["env_steps"] == config.num_updates * config.steps_per_update == 48
    assert len(summary["history"]) == 3
    for record in summary["history"]:
        for name, value in record.items():
            if name in EPISODE_METRICS or not isinstance(value, (float, np.floating)):
                continue
            assert np.isfinite(value), (name, value)
    assert np.isfinite(summary["eval/returns"]).all()
    for leaf in jax.tree.leaves(summary["params"]):
        assert np.isfinite(leaf).all()


@pytest.mark.parametrize(("agent", "env_id"), CASES)
def test_every_env_trains_or_is_refused_in_one_line(agent, env_id, monkeypatch):
    no_downloads(monkeypatch)
    refusal = expected_refusal(agent, env_id)
    if refusal is not None:
        with pytest.raises(errors.ConfigError) as info:
            agents.check_env_and_agent(agent, env_id)
        message = str(info.value)
        assert refusal in message and "\n" not in message, message
        if "acts in Discrete" in refusal:  # the library refuses it too, before compiling
            with pytest.raises(errors.ConfigError, match="needs a discrete action space"):
                train(agent, env_id)
        return
    assert agents.check_env_and_agent(agent, env_id)  # the env's observation shape
    assert_finite_run(train(agent, env_id), tiny_config(agent, env_id))


def test_sharded_equals_unsharded_on_asterix():
    # Asterix's step runs through per_device inside shard_map: same values as 1 device.
    one, two = train("ppo", "Asterix-MinAtar", 1), train("ppo", "Asterix-MinAtar")
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    for a, b in zip(one["history"], two["history"], strict=True):
        np.testing.assert_array_equal(a["train/episode_return_per_seed"],
                                      b["train/episode_return_per_seed"])
    np.testing.assert_array_equal(one["eval/returns"], two["eval/returns"])


def first_free(row):
    """A gymnax-style loop: a while_loop from a constant over this row (Asterix's slots)."""
    def body(carry):
        return carry.at[0].add(1).at[1].set((row[carry[0]] == 0).astype(jnp.int32))

    return jax.lax.while_loop(lambda c: (c[0] < row.shape[0] - 1) & (c[1] == 0), body,
                              jnp.array([0, 0]))


def test_per_device_runs_a_constant_carry_loop_inside_shard_map():
    mesh = parallel.make_mesh(4)
    rows = np.random.default_rng(0).integers(0, 3, (8, 6)).astype(np.int32)
    expected = jax.vmap(first_free)(rows)
    types = []

    def local(fn):
        def run(x):
            out = fn(x)
            types.append(jax.typeof(out))
            return out

        return jax.jit(parallel.shard_map(run, mesh, in_specs=P(parallel.DATA_AXIS),
                                          out_specs=P(parallel.DATA_AXIS)))

    # What Asterix-MinAtar hit (should a JAX release accept this, per_device has
    # become unnecessary rather than wrong).
    with pytest.raises(TypeError, match="manual axis types do not match"):
        local(jax.vmap(first_free))(rows)
    np.testing.assert_array_equal(local(gymnax_env.per_device(jax.vmap(first_free)))(rows),
                                  expected)
    assert parallel.DATA_AXIS in str(types[-1])  # typed varying over the data axis
    # Outside shard_map it is a plain call.
    np.testing.assert_array_equal(gymnax_env.per_device(jax.vmap(first_free))(rows), expected)
