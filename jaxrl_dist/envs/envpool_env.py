"""Atari games stepped by EnvPool (C++ thread pool), for host actors: ``--env=envpool:<Game>-v5``.

EnvPool (Weng et al. 2022, arXiv 2206.10558) steps a batch of ALE emulators in C++
threads, outside Python's GIL. It is configured to match ``envs/atari.py``'s
Gymnasium preprocessing: up to 30 no-ops at reset, frame skip 4 with max-pooling,
84×84 grayscale, a stack of 4 moved to the last axis (uint8 ``[84, 84, 4]``), v5's
sticky actions (0.25) and 27,000-step limit, the minimal action set, no reward
clipping, no FIRE at reset; ``terminal_on_life_loss`` maps to EnvPool's
``episodic_life`` (which, unlike Gymnasium's wrapper, goes on with the same game
after a lost life). The emulators and resize differ in small ways (EnvPool's
INTER_AREA resize and its own ALE build), so observations are not bit-identical to
Gymnasium's: evaluation and videos of an ``envpool:`` run use the Gymnasium env
``ALE/<Game>-v5`` with the same preprocessing.

EnvPool resets a finished env on the step after (its auto-reset ignores that step's
action); ``EnvPoolVectorEnv`` resets finished envs at once instead, so each step is a
real transition (``SAME_STEP``, as ``gymnasium_env.VectorEnv``).
"""

import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.envs import atari
from jaxrl_dist.envs.spec import Step

PREFIX = "envpool:"


def is_envpool(env: str) -> bool:
    """Whether ``env`` names an EnvPool game (``envpool:<Game>-v5``)."""
    return env.startswith(PREFIX)


def gymnasium_id(env: str) -> str:
    """The Gymnasium id of the same game: ``ALE/Pong-v5`` for ``envpool:Pong-v5``."""
    return atari.PREFIX + env[len(PREFIX):]


def check(env: str) -> None:
    """Checks that EnvPool is installed and knows ``env``'s game.

    Raises:
      ConfigError: a one-line message naming ``--env`` and what is allowed.
    """
    try:
        import envpool

        atari.register()  # evaluation and videos play the Gymnasium ALE env
    except ModuleNotFoundError:
        raise errors.ConfigError(
            f'--env={env} needs EnvPool and ale-py: pip install -e ".[envpool]"') from None
    task = env[len(PREFIX):]
    games = sorted(set(envpool.list_all_envs())
                   & {i.removeprefix(atari.PREFIX) for i in atari.game_ids()})
    if task not in games:
        raise errors.ConfigError(
            f"--env={env}: {task!r} is not an Atari game EnvPool has (e.g. Pong-v5, "
            f"Breakout-v5; {len(games)} in all)")


class EnvPoolVectorEnv:
    """``num_envs`` ALE games in one EnvPool, with ``gymnasium_env.VectorEnv``'s interface.

    Args:
      env: ``envpool:<Game>-v5``.
      num_envs: ``B``.
      seed: EnvPool's seed (env ``i`` gets ``seed + i``).
      vectorization: ignored (EnvPool has its own thread pool).
      terminal_on_life_loss: EnvPool's ``episodic_life``.

    Raises:
      ConfigError: see ``check``.
    """

    def __init__(self, env: str, num_envs: int, seed: int, vectorization: str = "sync",
                 terminal_on_life_loss: bool = False):
        check(env)
        self.env_id = env[len(PREFIX):]
        self.num_envs = num_envs
        self.vectorization = vectorization
        self.terminal_on_life_loss = terminal_on_life_loss
        self._env = None
        self._open(seed)

    def _open(self, seed: int) -> None:
        import envpool

        self._env = envpool.make(
            self.env_id, env_type="gymnasium", num_envs=self.num_envs, seed=seed,
            episodic_life=self.terminal_on_life_loss, reward_clip=False,
            repeat_action_probability=0.25, use_fire_reset=False, noop_max=atari.NOOP_MAX,
            stack_num=atari.STACK, frame_skip=atari.FRAME_SKIP, img_height=atari.SCREEN_SIZE,
            img_width=atari.SCREEN_SIZE, max_episode_steps=27_000,
        )
        obs, _ = self._env.reset()
        self.obs = _stack_last(obs)
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)
        self._finished = [0.0, 0.0, 0]

    def recreate(self, seed: int, only: np.ndarray | None = None) -> None:
        """A fresh pool reset with ``seed`` (EnvPool cannot re-make single envs: ``only``
        re-makes all of them)."""
        del only
        self.close()
        self._open(seed)

    def step(self, action: np.ndarray, only: np.ndarray | None = None):
        """Steps every env with ``action`` ``[B]`` int; returns a ``spec.Step``.

        Raises:
          ValueError: ``only`` is given (EnvPool steps all envs; it never raises
            ``SubEnvFault``, after which ``only`` is used).
        """

        if only is not None:
            raise ValueError("EnvPoolVectorEnv steps every env (only=None)")
        obs, reward, terminated, truncated, _ = self._env.step(np.asarray(action, np.int32))
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool) & ~terminated
        reward = np.asarray(reward, np.float32)
        next_obs = _stack_last(obs)
        obs = next_obs
        done = terminated | truncated
        self._returns += reward
        self._lengths += 1
        if done.any():
            ids = np.flatnonzero(done)
            fresh, _ = self._env.reset(ids.astype(np.int32))
            obs = next_obs.copy()
            obs[ids] = _stack_last(fresh)
            self._finished[0] += float(self._returns[ids].sum())
            self._finished[1] += float(self._lengths[ids].sum())
            self._finished[2] += len(ids)
            self._returns[ids], self._lengths[ids] = 0.0, 0
        self.obs = obs
        return Step(obs, reward, terminated, truncated, next_obs)

    def get_state(self) -> None:
        """``None``: EnvPool's emulators cannot be captured (a resumed run starts fresh
        games, as for Gymnasium's Atari envs)."""
        return None

    def pop_faults(self) -> tuple[int, None]:
        """``(0, None)``: EnvPool raises no per-env faults that are absorbed here."""
        return 0, None

    def pop_episode_sums(self) -> tuple[float, float, int]:
        """``(return_sum, length_sum, count)`` of episodes finished since the last call."""
        sums, self._finished = tuple(self._finished), [0.0, 0.0, 0]
        return sums

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _stack_last(obs: np.ndarray) -> np.ndarray:
    """``[B, S, H, W]`` -> ``[B, H, W, S]`` uint8 (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(obs, np.uint8), 1, -1))
