"""The episode players (``envs/episodes.py``): ``play_gymnax`` on device and
``play_gymnasium`` on the host, and the entry points built on them (``make_evaluator``,
``evaluate_on_host``). The fault handling of the host player: tests/envs/test_env_faults.py.
"""

import gymnasium
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.envs import episodes, gymnax_env

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


def short_cartpole(num_envs=4, max_steps=30):
    _, params = gymnax.make("CartPole-v1")
    return gymnax_env.GymnaxEnv("CartPole-v1", num_envs,
                                params.replace(max_steps_in_episode=max_steps))


def push_by_velocity(obs):
    """CartPole: push the way the pole falls (keeps it up for many steps)."""
    return (obs[..., 3] > 0).astype(jnp.int32)


# ------------------------------------------------------------------ gymnax


def test_gymnax_player_returns_lengths_and_frames_of_each_first_episode():
    env = short_cartpole()
    reset_key, step_key = jax.random.split(jax.random.key(0))

    def play(act, act_key=None, record=0):
        return jax.jit(lambda r, s, a: episodes.play_gymnax(env, act, 5, r, s, a, record))(
            reset_key, step_key, act_key)

    left = lambda obs, key: jnp.zeros(obs.shape[0], jnp.int32)  # noqa: E731 - falls fast
    returns, lengths, frames = play(left)
    assert frames is None
    assert returns.dtype == jnp.float32 and returns.shape == (5,)
    assert lengths.dtype == jnp.int32 and lengths.shape == (5,)
    np.testing.assert_array_equal(returns, lengths)  # CartPole: reward 1 a step
    assert (lengths > 0).all() and (lengths < 30).all()  # terminated before the limit
    balanced, balanced_lengths, _ = play(lambda obs, key: push_by_velocity(obs))
    np.testing.assert_array_equal(balanced_lengths, np.full(5, 30))  # the time limit ends it
    # Frames: the states acted on, ``finished`` turning on after the episode's last step.
    _, _, (states, finished, rewards) = play(left, record=2)
    assert finished.shape == rewards.shape == (30, 2) and states.x.shape == (30, 2)
    for v in range(2):
        assert int((~finished[:, v]).sum()) == lengths[v]
    first = env.reset(jax.random.split(reset_key, 5)).env_state
    np.testing.assert_array_equal(states.x[0], first.x[:2])


def test_gymnax_player_samples_with_one_fresh_key_per_step():
    env = short_cartpole()
    seen = []

    def act(obs, key):
        seen.append(key)
        return jax.random.bernoulli(key, 0.5, obs.shape[:1]).astype(jnp.int32)

    keys = jax.random.split(jax.random.key(1), 3)
    one = jax.jit(lambda k: episodes.play_gymnax(env, act, 4, *k))
    a, b = one(keys), one(keys)
    np.testing.assert_array_equal(a[0], b[0])  # the keys decide it all
    assert seen and seen[0] is not None and seen[0].shape == ()  # a key per step
    c = one(jnp.stack([keys[0], keys[1], jax.random.key(2)]))
    assert not np.array_equal(a[1], c[1])  # another act_key: other draws


def test_make_evaluator_is_the_greedy_player_per_seed():
    env = short_cartpole()

    def policy(params, obs):  # logits; params: a per-seed bias towards action 1
        logits = jnp.stack([jnp.zeros(obs.shape[0]), obs[:, 3] * params], axis=-1)
        return logits

    evaluate = episodes.make_evaluator(env, policy, lambda x: jnp.argmax(x, -1), 6)
    params = jnp.array([1.0, -1.0, 0.0])
    key = jax.random.key(7)
    returns = evaluate(params, key)
    assert returns.shape == (3, 6) and returns.dtype == jnp.float32
    reset_key, step_key = jax.random.split(key)
    for s, p in enumerate(params):
        expected, _, _ = episodes.play_gymnax(
            env, lambda obs, _, p=p: jnp.argmax(policy(p, obs), -1), 6, reset_key, step_key)
        np.testing.assert_array_equal(returns[s], expected)
    assert (returns[0] == 30).all() and (returns[1] < 30).all()


# ------------------------------------------------------------------ gymnasium


class Recorder:
    """``make_env`` of CartPole envs that records what it was asked for and what
    its envs were given (reset seeds, actions)."""

    def __init__(self, env_id="CartPole-v1", fail_step=None):
        self.env_id, self.made, self.seeds, self.actions = env_id, [], [], []
        self.fail_step, self.calls = fail_step, 0

    def __call__(self, episode):
        self.made.append(episode)
        env = gymnasium.make(self.env_id)
        reset, step = env.reset, env.step

        def on_reset(seed=None, options=None):
            self.seeds.append(seed)
            return reset(seed=seed, options=options)

        def on_step(action):
            self.calls += 1
            if self.calls == self.fail_step:
                raise RuntimeError("simulated step fault")
            self.actions.append(action)
            return step(action)

        env.reset, env.step = on_reset, on_step
        return env


def greedy_cartpole(obs, key):
    assert key is None
    return push_by_velocity(obs)


def test_gymnasium_player_in_lockstep_and_one_after_another_gives_the_same_episodes():
    together, alone = Recorder(), Recorder()
    returns, lengths = episodes.play_gymnasium(together, greedy_cartpole, 3, 10, 60)
    assert returns.dtype == np.float64 and lengths.dtype == np.int64
    assert together.made == [0, 1, 2] and together.seeds == [10, 11, 12]
    np.testing.assert_array_equal(returns, lengths)
    assert (lengths == 60).all()  # max_steps caps them
    assert all(type(a) is int for a in together.actions)  # Discrete: Python ints
    again = episodes.play_gymnasium(alone, greedy_cartpole, 3, 10, 60, num_envs=1)
    assert alone.made == [0] and alone.seeds == [10, 11, 12]  # one env, reset 3 times
    np.testing.assert_array_equal(again[0], returns)
    np.testing.assert_array_equal(again[1], lengths)


def test_gymnasium_player_splits_its_key_once_per_step():
    keys = []

    def act(obs, key):
        keys.append(jax.random.key_data(key))
        return np.zeros(obs.shape[0], np.int32)

    _, lengths = episodes.play_gymnasium(Recorder(), act, 2, 0, 500, num_envs=1,
                                         key=jax.random.key(5))
    assert len(keys) == lengths.sum()
    key = jax.random.key(5)
    for got in keys[:3]:
        key, expected = jax.random.split(key)
        np.testing.assert_array_equal(got, jax.random.key_data(expected))


def test_gymnasium_player_reruns_a_cut_episode_on_an_env_made_for_it():
    lines = []
    env = Recorder(fail_step=5)  # episode 0's 5th step raises
    returns, lengths = episodes.play_gymnasium(
        env, greedy_cartpole, 2, 0, 40, num_envs=1, name="gymnasium:CartPole-v1",
        what="sampled evaluation", log=lines.append)
    assert env.made == [0, 0]  # re-made for episode 0
    assert env.seeds == [0, 7_919_993, 1]  # a fresh seed for the re-run
    assert (lengths == 40).all()
    assert lines[0].startswith("sampled evaluation (gymnasium:CartPole-v1): env raised "
                               "RuntimeError: simulated step fault (in step)")
    assert lines[-1] == ("sampled evaluation (gymnasium:CartPole-v1): 1 env fault(s); "
                         "1 of 2 episode(s) re-run with fresh seeds")


def test_gymnasium_player_clips_box_actions_to_the_bounds():
    env = Recorder("Pendulum-v1")
    returns, lengths = episodes.play_gymnasium(
        env, lambda obs, key: np.full((obs.shape[0], 1), 5.0, np.float32), 2, 0, None)
    assert (lengths == 200).all()  # Pendulum's time limit
    assert all(a.shape == (1,) and a[0] == 2.0 for a in env.actions)
    assert np.isfinite(returns).all()


def test_evaluate_on_host_is_the_greedy_player_with_one_env_per_episode():
    def policy(params, obs):
        return jnp.stack([jnp.zeros(obs.shape[0]), obs[:, 3] * params], axis=-1)

    returns = episodes.evaluate_on_host("gymnasium:CartPole-v1", policy,
                                        lambda x: jnp.argmax(x, -1), 1.0, 3, 10, 60)
    assert returns.dtype == np.float64 and returns.shape == (3,)
    expected, _ = episodes.play_gymnasium(Recorder(), greedy_cartpole, 3, 10, 60)
    np.testing.assert_array_equal(returns, expected)
