"""Greedy evaluation episodes on device (and on host Gymnasium envs: ``evaluate_on_host``).

Each of ``num_episodes`` fresh environments plays one full episode with the
policy's mode action (argmax logits / Gaussian mean); the undiscounted return of
that first episode is recorded. Episodes end by termination or by the env's
time limit, so ``max_episode_steps`` steps always suffice.
"""

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.envs import gymnax_env

_log = logging.getLogger(__name__)


def make_evaluator(
    env: gymnax_env.GymnaxEnv,
    policy_apply: Callable[[Any, jax.Array], Any],
    mode_fn: Callable[[Any], jax.Array],
    num_episodes: int,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
    """Returns a jitted ``(params[S], key) -> returns [S, num_episodes]`` (float32).

    ``compiler_options``: XLA options of the program (``tuning.Tuning.run_once_options``).

    ``params`` carry a leading seed axis ``S``; every seed is evaluated on the
    same ``num_episodes`` initial states drawn from ``key``.
    """

    def evaluate_one(params, key):
        reset_key, step_key = jax.random.split(key)
        state = env.reset(jax.random.split(reset_key, num_episodes))
        step_keys = jax.random.split(step_key, (env.max_episode_steps, num_episodes))

        def step(carry, keys):
            state, returns, finished = carry
            action = mode_fn(policy_apply(params, state.obs))
            # No auto-reset is needed: only each env's first episode counts.
            state, ts = env.step(state, action, keys, (state.obs, state.env_state))
            returns = returns + jnp.where(finished, 0.0, ts.reward)
            finished = finished | ts.terminated | ts.truncated
            return (state, returns, finished), None

        init = (state, jnp.zeros(num_episodes, jnp.float32), jnp.zeros(num_episodes, bool))
        (_, returns, _), _ = jax.lax.scan(step, init, step_keys)
        return returns

    return jax.jit(
        jax.vmap(evaluate_one, in_axes=(0, None)), compiler_options=compiler_options or {}
    )


def evaluate_on_host(
    env: str,
    policy_apply: Callable[[Any, jax.Array], Any],
    mode_fn: Callable[[Any], jax.Array],
    params: Any,
    num_episodes: int,
    seed: int,
    max_steps: int | None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Greedy returns ``[num_episodes]`` (float64) of ``gymnasium:<id>`` env ``env``.

    ``num_episodes`` envs (seeds ``seed + i``) each play their first episode with
    the policy's mode action (one batched policy call per step, Box actions clipped to
    the bounds); steps are capped at ``max_steps`` (the env's time limit; 100 000 when
    it has none).

    Faults: an episode whose env raises (in ``reset`` or ``step``) is discarded and
    re-run from the start on a re-made env with a fresh seed; the other episodes go on.
    ``log`` (default: this module's logger) gets at most one warning line every
    ``gymnasium_env.LOG_EVERY_S`` s and, after faults, a count.

    Raises:
      ActorError: an episode's env raised ``gymnasium_env.MAX_CONSECUTIVE_FAULTS``
        times in a row (no successful step between), or an episode was cut
        ``MAX_EVAL_RERUNS`` times; the one-line message quotes the env's last exception.
    """
    from jaxrl_dist.envs import gymnasium_env

    emit = log or _log.warning
    faults = gymnasium_env.FaultLog(f"greedy evaluation ({env})", emit)
    greedy = jax.jit(lambda p, o: mode_fn(policy_apply(p, o)))
    episodes = [_Episode(env, i, seed + i, max_steps or 100_000) for i in range(num_episodes)]
    try:
        for episode in episodes:
            episode.begin(faults)
        live = episodes
        while live:
            # Every episode's observation, finished or not: one shape, one compile.
            actions = np.asarray(greedy(params, np.stack([e.obs for e in episodes])))
            for episode in live:
                episode.step(actions[episode.index], faults)
            cut = [e for e in live if e.env is None and not e.done]
            if cut:  # one backoff for all of them, then each starts again
                time.sleep(max(gymnasium_env.backoff_s(e.consecutive) for e in cut))
                for episode in cut:
                    episode.begin(faults)
            live = [e for e in live if not e.done]
    finally:
        for episode in episodes:
            episode.close()
    if faults.total:
        emit(f"greedy evaluation ({env}): {faults.total} env fault(s); "
             f"{sum(e.reruns > 0 for e in episodes)} of {num_episodes} episode(s) re-run "
             "with fresh seeds")
    return np.array([e.ret for e in episodes], np.float64)


MAX_EVAL_RERUNS = 100  # an evaluation episode cut by env faults more often ends the run


class _Episode:
    """One greedy evaluation episode on its own env (``evaluate_on_host``)."""

    def __init__(self, env: str, index: int, seed: int, max_steps: int):
        from jaxrl_dist.envs import gymnasium_env  # gymnasium only for host envs

        self.gym = gymnasium_env
        self.name, self.env_id = env, gymnasium_env.gymnasium_id(env)
        self.index, self.seed, self.max_steps = index, seed, max_steps
        self.env = self.obs = self.bounds = None
        self.ret, self.steps, self.done = 0.0, 0, False
        self.reruns = self.consecutive = 0

    def begin(self, faults) -> None:
        """(Re-)makes the env and resets it (fresh seed after a fault), retrying faults."""
        while True:
            try:
                if self.env is None:
                    self.env = self.gym.make_single(self.env_id)
                    self.dtype = self.gym.obs_dtype(self.env.observation_space)
                    space = self.env.action_space
                    self.bounds = (space.low, space.high) if type(
                        space).__name__ == "Box" else None
                seed = (self.seed + self.reruns * 7_919_993) % 2**31
                obs, _ = self.env.reset(seed=seed)
            except Exception as e:  # noqa: BLE001 - any env failure: re-make and retry
                self._fault(e, "reset", faults)
                time.sleep(self.gym.backoff_s(self.consecutive))
                continue
            self.obs = np.asarray(obs, self.dtype)
            self.ret, self.steps = 0.0, 0
            return

    def step(self, action: np.ndarray, faults) -> None:
        """Steps the episode once; after a fault its env is dropped (``begin`` again)."""
        if self.bounds is not None:
            action = np.clip(action, *self.bounds)
        try:
            obs, reward, terminated, truncated, _ = self.env.step(action)
        except Exception as e:  # noqa: BLE001 - any env failure: re-run the episode
            self._fault(e, "step", faults)
            return
        self.consecutive = 0
        self.obs = np.asarray(obs, self.dtype)
        self.ret += float(reward)
        self.steps += 1
        if terminated or truncated or self.steps >= self.max_steps:
            self.done = True
            self.close()

    def _fault(self, error: BaseException, where: str, faults) -> None:
        """Counts and logs the fault and drops the env (the caller waits the backoff).

        Raises:
          ActorError: too many faults (see ``evaluate_on_host``).
        """
        self.close()
        self.consecutive += 1
        self.reruns += 1
        faults.fault(1, f"{self.gym.describe(error)} (in {where})",
                     "episode discarded, re-run on a re-made env with a fresh seed")
        if self.consecutive >= self.gym.MAX_CONSECUTIVE_FAULTS:
            raise errors.ActorError(
                f"greedy evaluation: {self.gym.gave_up(self.name, self.consecutive, where, error)}"
            ) from error
        if self.reruns > MAX_EVAL_RERUNS:
            raise errors.ActorError(
                f"greedy evaluation: an episode on {self.name} was cut by env faults "
                f"{self.reruns} times (limit MAX_EVAL_RERUNS={MAX_EVAL_RERUNS}), last in "
                f"{where}: {self.gym.describe(error)}"
            ) from error

    def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(Exception):  # closing a broken env must not raise
                self.env.close()
            self.env = None
