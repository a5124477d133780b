"""Atari games (ale-py's ROMs) through Gymnasium's preprocessing and through EnvPool.

The preprocessing is checked against a plain loop over the raw emulator written from
Mnih et al. 2015 (Methods): no-ops at reset, each action repeated 4 times, the max of
the last two grayscale frames, resized to 84×84 (INTER_AREA), the last 4 such frames.
"""

import json
import sys

import cv2
import gymnasium
import numpy as np
import pytest

from jaxrl_dist import errors
from jaxrl_dist.envs import atari, envpool_env, gymnasium_env

pytest.importorskip("ale_py")


def resize(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)


class Reference:
    """The paper's preprocessing as a plain loop over a raw ALE env (``frameskip=1``)."""

    def __init__(self, env_id: str, seed: int):
        atari.register()
        self.env = gymnasium.make(env_id, frameskip=1, repeat_action_probability=0.0,
                                  obs_type="grayscale")
        screen, _ = self.env.reset(seed=seed)
        noops = self.env.unwrapped.np_random.integers(1, atari.NOOP_MAX + 1)
        for _ in range(noops):
            screen, *_ = self.env.step(0)
        self.frames = [resize(screen)] * atari.STACK  # padded with the reset frame

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        screens, total, done = [], 0.0, False
        for _ in range(atari.FRAME_SKIP):
            screen, reward, terminated, truncated, _ = self.env.step(action)
            screens.append(screen)
            total += reward
            if terminated or truncated:
                done = True
                break
        pooled = np.maximum(screens[-2], screens[-1]) if len(screens) > 1 else screens[-1]
        self.frames = self.frames[1:] + [resize(pooled)]
        return np.stack(self.frames, axis=-1), total, done


def test_preprocessing_equals_the_papers_plain_loop_on_a_real_rom():
    ours = atari.make("ALE/Pong-v5", repeat_action_probability=0.0)
    reference = Reference("ALE/Pong-v5", seed=3)
    obs, _ = ours.reset(seed=3)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    assert ours.observation_space.shape == (84, 84, 4)
    assert ours.observation_space.dtype == np.uint8
    assert np.array_equal(obs, np.stack(reference.frames, axis=-1))
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(60):
        action = int(rng.integers(0, ours.action_space.n))
        next_obs, reward, terminated, truncated, _ = ours.step(action)
        expected, expected_reward, done = reference.step(action)
        assert np.array_equal(next_obs, expected)
        assert reward == expected_reward and (terminated or truncated) == done
        assert np.array_equal(next_obs[..., :3], obs[..., 1:])  # the stack shifts by one
        changed += not np.array_equal(next_obs[..., -1], obs[..., -1])
        obs = next_obs
    assert changed > 30  # the frames really move
    ours.close()


def test_v5_keeps_sticky_actions_and_minimal_actions():
    env = atari.make("ALE/Breakout-v5")
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_space.n == 4  # Breakout's minimal action set
    env.close()


def run_to_episode_end(vec, max_steps: int = 3000):
    rng = np.random.default_rng(1)
    rewards = np.zeros(vec.num_envs)
    for _ in range(max_steps):
        before = vec.obs.copy()
        step = vec.step(rng.integers(0, 4, vec.num_envs))
        assert step.obs.dtype == np.uint8 and step.next_obs.dtype == np.uint8
        rewards += step.reward
        done = step.terminated | step.truncated
        live = ~done
        assert np.array_equal(step.next_obs[live, ..., :3], before[live, ..., 1:])
        if done.any():
            return step, done, rewards
    raise AssertionError(f"no episode ended in {max_steps} steps")


@pytest.mark.parametrize("env", ["gymnasium:ALE/Breakout-v5", "envpool:Breakout-v5"])
def test_vector_env_resets_in_the_same_step_and_counts_game_scores(env):
    if env.startswith("envpool:"):
        pytest.importorskip("envpool")
    spec = gymnasium_env.make_spec(env)
    assert spec.obs_shape == (84, 84, 4) and spec.obs_dtype == np.uint8
    assert spec.action_dim == 4
    vec = gymnasium_env.make_vector(env, 2, seed=5)
    assert vec.obs.shape == (2, 84, 84, 4) and vec.obs.dtype == np.uint8
    step, done, rewards = run_to_episode_end(vec)
    i = int(np.flatnonzero(done)[0])
    # The finished env acts next on its fresh game (a reset stack: 4 equal frames) while
    # next_obs is the true last observation.
    fresh = step.obs[i]
    assert all(np.array_equal(fresh[..., k], fresh[..., 3]) for k in range(3))
    assert not np.array_equal(step.next_obs[i], fresh)
    total, _, count = vec.pop_episode_sums()
    assert count == done.sum() and total == pytest.approx(rewards[done].sum())
    vec.close()


def test_terminal_on_life_loss_ends_the_episode_at_the_first_lost_life():
    whole = gymnasium_env.make_vector("gymnasium:ALE/Breakout-v5", 1, seed=2)
    lives = gymnasium_env.make_vector("gymnasium:ALE/Breakout-v5", 1, seed=2,
                                      terminal_on_life_loss=True)
    *_, whole_len = _first_episode_length(whole)
    *_, life_len = _first_episode_length(lives)
    assert life_len < whole_len / 2  # 5 lives
    whole.close()
    lives.close()


def _first_episode_length(vec) -> tuple[int]:
    rng = np.random.default_rng(1)
    for t in range(1, 5000):
        step = vec.step(rng.integers(0, 4, 1))
        if step.terminated[0] or step.truncated[0]:
            return (t,)
    raise AssertionError("no episode ended")


def test_bad_atari_ids_are_one_line_errors():
    with pytest.raises(errors.ConfigError, match="'ALE/NoSuchGame-v5' is not an ALE game"):
        gymnasium_env.make_spec("gymnasium:ALE/NoSuchGame-v5")
    pytest.importorskip("envpool")
    with pytest.raises(errors.ConfigError, match="is not an Atari game EnvPool has"):
        envpool_env.check("envpool:CartPole-v1")


def test_a_bad_flag_on_an_atari_game_is_one_line_without_ales_banner(tmp_path):
    from tests.cli.test_cli import TRAIN, run_script

    result = run_script(TRAIN, "--env=gymnasium:ALE/Pong-v5", "--num_envs=3",
                        f"--workdir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --num_envs does not apply to host actors (--env=gymnasium:ALE/Pong-v5); "
        "set --actor_threads and --envs_per_thread"], result.stderr


PONG_TEST = "test_a_short_ppo_run_on_pong_with_the_nature_torso_through_train_py"


PONG_ARGS = [
    "--agent=ppo", "--env=gymnasium:ALE/Pong-v5", "--torso=nature", "--total_steps=256",
    "--actor_threads=1", "--envs_per_thread=4", "--rollout_len=64", "--num_epochs=1",
    "--num_minibatches=2", "--eval_episodes=1", "--log_points=1", "--compilation_cache="]


def background_runs(items, tmp_path_factory):
    """The Pong run goes to conftest's background runs (a subprocess, on the core the
    in-process tests leave free)."""
    from tests import multiprocess as mp

    if not any(item.originalname == PONG_TEST for item in items):
        return []
    workdir = tmp_path_factory.mktemp("pong") / "run"
    return [dict(key="pong", argv=[sys.executable, mp.TRAIN, *PONG_ARGS,
                                   f"--workdir={workdir}"],
                 env=mp.child_env(1), cwd=mp.ROOT, timeout=300, workdir=workdir)]


def test_a_short_ppo_run_on_pong_with_the_nature_torso_through_train_py(background):
    """train.py end to end on a real ROM: uint8 frames from the env to the Nature torso,
    Atari defaults (rewards clipped in the learner), greedy evaluation of a whole game."""
    result = background.result("pong")
    assert result.returncode == 0, result.stderr[-3000:]
    workdir = background.job("pong")["workdir"]
    config = json.loads((workdir / "config.json").read_text())
    assert config["torso"] == "nature" and config["reward_clip"] == 1.0
    summary = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["env_steps"] == 256
    assert -21.0 <= summary["eval/episode_return"] <= 21.0  # one whole game of Pong
    assert len(summary["params_sha256"]) == 64
