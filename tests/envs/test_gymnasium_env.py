"""The Gymnasium vector-env adapter of the host actors: autoreset, truncation, statistics."""

import gymnasium
import numpy as np
import pytest

from jaxrl_dist import errors
from jaxrl_dist.envs import gymnasium_env


def test_every_step_is_a_real_transition_no_next_step_phantoms():
    # CartPole pays +1 on every real step. Gymnasium's default NEXT_STEP autoreset
    # inserts a reward-0 step after each episode end; SAME_STEP (ours) never does.
    env = gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 4, seed=0)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(300):
        step = env.step(rng.integers(0, 2, size=4))
        assert np.all(step.reward == 1.0)
        ends += int((step.terminated | step.truncated).sum())
    assert ends >= 8
    env.close()
    # The default (NEXT_STEP) vector env does produce such steps: the test can tell.
    default = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    default.reset(seed=0)
    rewards = [default.step(rng.integers(0, 2, size=4))[1] for _ in range(300)]
    default.close()
    assert np.any(np.asarray(rewards) == 0.0)


def test_episode_end_gives_the_final_observation_and_then_the_reset_one():
    seed = 3
    env = gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 2, seed=seed)
    single = gymnasium.make("CartPole-v1")
    single_obs, _ = single.reset(seed=seed)
    np.testing.assert_allclose(env.obs[0], single_obs)
    for _ in range(500):
        step = env.step(np.array([1, 0]))
        single_obs, _, terminated, truncated, _ = single.step(1)
        np.testing.assert_allclose(step.next_obs[0], single_obs, rtol=1e-6)
        if terminated or truncated:
            break
    assert step.terminated[0] and not step.truncated[0]
    # The true last observation is out of bounds (pole fell / cart left); the obs to act
    # on next is a fresh reset state, near 0.
    assert not np.allclose(step.next_obs[0], step.obs[0])
    assert np.all(np.abs(step.obs[0]) <= 0.05)
    np.testing.assert_array_equal(env.obs, step.obs)


def test_time_limit_is_truncation_not_termination_and_statistics_count_it():
    env = gymnasium_env.VectorEnv("gymnasium:Pendulum-v1", 3, seed=1)
    total = np.zeros(3)
    for t in range(200):
        step = env.step(np.zeros((3, 1), np.float32))
        total += step.reward
        assert not step.terminated.any()
        assert step.truncated.all() == (t == 199)
    # At the cut, next_obs is the last real state (bootstrap from it), not a reset.
    assert not np.allclose(step.next_obs, step.obs)
    return_sum, length_sum, count = env.pop_episode_sums()
    assert count == 3 and length_sum == 600
    np.testing.assert_allclose(return_sum, total.sum(), rtol=1e-5)
    assert env.pop_episode_sums() == (0.0, 0.0, 0)


def test_box_actions_are_clipped_to_the_space():
    env = gymnasium_env.VectorEnv("gymnasium:Pendulum-v1", 1, seed=0)
    env.step(np.full((1, 1), 100.0, np.float32))  # Pendulum would assert on out-of-range
    env.close()


def test_spec_of_discrete_and_continuous_envs():
    spec = gymnasium_env.make_spec("gymnasium:CartPole-v1")
    assert spec.obs_shape == (4,) and spec.discrete and spec.action_dim == 2
    assert spec.max_episode_steps == 500
    spec = gymnasium_env.make_spec("gymnasium:Pendulum-v1")
    assert spec.obs_shape == (3,) and not spec.discrete and spec.action_dim == 1


@pytest.mark.parametrize(
    "env, message",
    [
        ("gymnasium:NoSuchEnv-v0", "not a registered Gymnasium id"),
        ("gymnasium:FrozenLake-v1", "Discrete observation space"),
        ("gymnasium:Blackjack-v1", "Tuple observation space"),
    ],
)
def test_bad_env_ids_are_config_errors(env, message):
    with pytest.raises(errors.ConfigError, match=message):
        gymnasium_env.make_spec(env)


def test_prefix_helpers():
    assert gymnasium_env.is_gymnasium("gymnasium:CartPole-v1")
    assert not gymnasium_env.is_gymnasium("CartPole-v1")
    assert gymnasium_env.gymnasium_id("gymnasium:CartPole-v1") == "CartPole-v1"


def test_async_vectorization_matches_sync():
    actions = np.random.default_rng(0).integers(0, 2, size=(60, 2))
    results = []
    for mode in ("sync", "async"):
        env = gymnasium_env.VectorEnv("gymnasium:CartPole-v1", 2, seed=5, vectorization=mode)
        steps = [env.step(a) for a in actions]
        env.close()
        results.append(steps)
    for s, a in zip(*results, strict=True):
        np.testing.assert_array_equal(s.next_obs, a.next_obs)
        np.testing.assert_array_equal(s.terminated, a.terminated)
        np.testing.assert_array_equal(s.obs, a.obs)
