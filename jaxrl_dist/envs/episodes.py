"""Episode players: one per env kind, for every evaluation of the package.

``play_gymnax`` plays a batch of gymnax envs on device (one ``lax.scan``, traced inside
the caller's ``jit``); ``play_gymnasium`` plays Gymnasium envs on the host, re-running
the episodes an env fault cuts. Both act through a given function, greedy (the policy's
mode) or sampled (with the key they are given), and give each episode's undiscounted
return and length. Each episode is an env's first (gymnax) or a fresh reset (Gymnasium)
played to its termination, its time limit or ``max_steps``.

The acting paths call the thin entry points: ``make_evaluator`` (on device, anakin) and
``evaluate_on_host`` (Gymnasium, sebulba), both greedy; experiments/evaluate.py calls
the players themselves (sampled actions, frames for GIFs, a video-recording env).
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

MAX_EVAL_RERUNS = 100  # an evaluation episode cut by env faults more often ends the run
NO_TIME_LIMIT_STEPS = 100_000  # play_gymnasium's step cap for an env without a time limit


def play_gymnax(
    env: gymnax_env.GymnaxEnv,
    act: Callable[[jax.Array, jax.Array | None], jax.Array],
    num_episodes: int,
    reset_key: jax.Array,
    step_key: jax.Array,
    act_key: jax.Array | None = None,
    record: int = 0,
) -> tuple[jax.Array, jax.Array, Any]:
    """Plays ``num_episodes`` fresh envs of ``env`` to their first episode's end.

    A traceable function: call it inside ``jax.jit`` (and ``vmap``, for a batch of
    parameters). Every env plays ``T = env.max_episode_steps`` steps (enough for any
    episode: the time limit ends it), with no auto-reset; what follows an env's first
    episode is not counted.

    Args:
      env: the gymnax env (any ``num_envs``: it is reset with ``num_episodes`` keys).
      act: ``act(obs [num_episodes, *obs_shape], key) -> action [num_episodes, ...]``,
        traced; ``key`` is ``None`` without ``act_key`` (greedy), else a fresh key per
        step (the ``T`` keys of ``jax.random.split(act_key, T)``, in order).
      num_episodes: the number of envs, one episode each.
      reset_key: the envs' initial states (``jax.random.split(reset_key, num_episodes)``).
      step_key: the envs' transitions (``jax.random.split(step_key, (T, num_episodes))``).
      act_key: keys for a sampling ``act``; ``None``: ``act`` gets ``None``.
      record: the first ``record`` envs' frames are returned (a static int).

    Returns:
      ``(returns, lengths, frames)``: ``returns`` float32 ``[num_episodes]``, ``lengths``
      int32 ``[num_episodes]`` (steps of the first episode); ``frames`` ``None`` when
      ``record`` is 0, else ``(env states [T, record, ...], finished [T, record] bool,
      rewards [T, record] float32)`` as they were before each of the ``T`` steps
      (``finished``: that env's episode had ended; ``rewards``: of the step taken).

    Raises:
      whatever ``act`` or the env raise when traced (e.g. ``ValueError`` for an ``obs``
      shape the policy does not take).
    """
    steps = env.max_episode_steps
    state = env.reset(jax.random.split(reset_key, num_episodes))
    keys = (jax.random.split(step_key, (steps, num_episodes)),
            None if act_key is None else jax.random.split(act_key, steps))

    def step(carry, keys):
        state, returns, lengths, finished = carry
        action = act(state.obs, keys[1])
        seen = jax.tree.map(lambda x: x[:record], state.env_state) if record else None
        # No auto-reset is needed: only each env's first episode counts.
        state, ts = env.step(state, action, keys[0], (state.obs, state.env_state))
        returns = returns + jnp.where(finished, 0.0, ts.reward)
        lengths = lengths + (~finished).astype(jnp.int32)
        frames = (seen, finished[:record], ts.reward[:record]) if record else None
        finished = finished | ts.terminated | ts.truncated
        return (state, returns, lengths, finished), frames

    init = (state, jnp.zeros(num_episodes, jnp.float32), jnp.zeros(num_episodes, jnp.int32),
            jnp.zeros(num_episodes, bool))
    (_, returns, lengths, _), frames = jax.lax.scan(step, init, keys)
    return returns, lengths, frames


def make_evaluator(
    env: gymnax_env.GymnaxEnv,
    policy_apply: Callable[[Any, jax.Array], Any],
    mode_fn: Callable[[Any], jax.Array],
    num_episodes: int,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
    """Returns a jitted ``(params[S], key) -> returns [S, num_episodes]`` (float32).

    Greedy (``mode_fn(policy_apply(params, obs))``) ``play_gymnax`` of ``num_episodes``
    envs per seed. ``compiler_options``: XLA options of the program
    (``tuning.Tuning.run_once_options``).

    ``params`` carry a leading seed axis ``S``; every seed is evaluated on the
    same ``num_episodes`` initial states drawn from ``key``.
    """

    def evaluate_one(params, key):
        reset_key, step_key = jax.random.split(key)
        returns, _, _ = play_gymnax(
            env, lambda obs, _: mode_fn(policy_apply(params, obs)), num_episodes,
            reset_key, step_key,
        )
        return returns

    return jax.jit(
        jax.vmap(evaluate_one, in_axes=(0, None)), compiler_options=compiler_options or {}
    )


def play_gymnasium(
    make_env: Callable[[int], Any],
    act: Callable[[np.ndarray, jax.Array | None], Any],
    num_episodes: int,
    seed: int,
    max_steps: int | None,
    *,
    num_envs: int | None = None,
    key: jax.Array | None = None,
    name: str = "env",
    what: str = "greedy evaluation",
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plays ``num_episodes`` Gymnasium episodes on ``num_envs`` envs stepped in lockstep.

    Env ``j`` (``make_env(j)``) plays episodes ``j, j + num_envs, ...`` one after another;
    episode ``i`` is reset with seed ``seed + i`` and played to its termination or
    truncation, or ``max_steps`` steps (``None``: ``NO_TIME_LIMIT_STEPS``). Each step is
    one batched ``act`` call on every env's observation (an env done with its episodes
    included: one shape, one compile). Box actions are clipped to the bounds, Discrete
    ones passed as ``int``. An env is closed when it has played its last episode.

    Faults: an episode whose env raises (in ``make_env``, ``reset`` or ``step``) is
    discarded and re-run from the start on a re-made env (``make_env(i)``, ``i`` the
    episode it re-runs) with a fresh seed; the other envs go on. ``log`` (default: this
    module's logger) gets at most one warning line every ``gymnasium_env.LOG_EVERY_S`` s
    and, after faults, a count.

    Args:
      make_env: ``make_env(i) -> env``: a new Gymnasium env, about to play episode ``i``.
      act: ``act(obs [num_envs, *obs_shape], key) -> actions [num_envs, ...]`` (array-
        like); ``obs`` is uint8 for uint8 observation spaces, else float32; ``key`` is
        ``None`` without ``key``, else a fresh key per call: ``key, k =
        jax.random.split(key)`` before each.
      num_episodes: episodes to play (>= 1).
      seed: episode ``i``'s reset seed is ``seed + i`` (re-runs: ``seed + i + r *
        7 919 993`` mod 2**31 for its ``r``-th re-run).
      max_steps: the step cap of an episode.
      num_envs: envs playing at once (default ``num_episodes``: one episode each).
      key: a ``jax.random.key`` for a sampling ``act``; ``None``: ``act`` gets ``None``.
      name: the env's name in messages (``gymnasium:<id>``); ``what``: the evaluation's.

    Returns:
      ``(returns, lengths)``: float64 ``[num_episodes]`` undiscounted returns and int64
      ``[num_episodes]`` steps, in episode order.

    Raises:
      ActorError: an env raised ``gymnasium_env.MAX_CONSECUTIVE_FAULTS`` times in a row
        (no successful step between), or an episode was cut ``MAX_EVAL_RERUNS`` times;
        the one-line message, ``"<what>: ..."``, quotes the env's last exception.
      whatever ``act`` raises.
    """
    from jaxrl_dist.envs import gymnasium_env  # gymnasium only for host envs

    emit = log or _log.warning
    faults = gymnasium_env.FaultLog(f"{what} ({name})", emit)
    returns, lengths = np.zeros(num_episodes, np.float64), np.zeros(num_episodes, np.int64)
    num_envs = min(num_envs or num_episodes, num_episodes)
    slots = [_Slot(make_env, j, range(j, num_episodes, num_envs), seed,
                   max_steps or NO_TIME_LIMIT_STEPS, (returns, lengths), (name, what))
             for j in range(num_envs)]
    try:
        for slot in slots:
            slot.begin(faults)
        live = slots
        while live:
            act_key = None
            if key is not None:
                key, act_key = jax.random.split(key)
            # Every env's observation, done or not: one shape, one compile.
            actions = np.asarray(act(np.stack([s.obs for s in slots]), act_key))
            for slot in live:
                slot.step(actions[slot.index], faults)
            cut = [s for s in live if s.env is None and not s.done]
            if cut:  # one backoff for all of them, then each starts again
                time.sleep(max(gymnasium_env.backoff_s(s.consecutive) for s in cut))
                for slot in cut:
                    slot.begin(faults)
            live = [s for s in live if not s.done]
    finally:
        for slot in slots:
            slot.close()
    if faults.total:
        emit(f"{what} ({name}): {faults.total} env fault(s); "
             f"{sum(s.rerun_episodes for s in slots)} of {num_episodes} episode(s) re-run "
             "with fresh seeds")
    return returns, lengths


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
    it has none). ``play_gymnasium`` with one env per episode.

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

    env_id = gymnasium_env.gymnasium_id(env)
    greedy = jax.jit(lambda p, o: mode_fn(policy_apply(p, o)))
    returns, _ = play_gymnasium(
        lambda i: gymnasium_env.make_single(env_id), lambda obs, _: greedy(params, obs),
        num_episodes, seed, max_steps, name=env, what="greedy evaluation", log=log,
    )
    return returns


class _Slot:
    """One env of ``play_gymnasium`` and the episodes it plays, one after another.

    ``begin`` (re-)makes the env if needed and resets it for the current episode;
    ``step`` steps it once, records a finished episode in ``results`` and begins the
    next; after a fault the env is dropped (``env`` is ``None``) until ``begin``.
    """

    def __init__(self, make_env: Callable[[int], Any], index: int, episodes: range,
                 seed: int, max_steps: int, results: tuple[np.ndarray, np.ndarray],
                 names: tuple[str, str]):
        from jaxrl_dist.envs import gymnasium_env  # gymnasium only for host envs

        self.gym, self.make_env = gymnasium_env, make_env
        self.index, self.queue, self.seed, self.max_steps = index, list(episodes), seed, max_steps
        self.results, (self.name, self.what) = results, names
        self.env = self.obs = self.bounds = None
        self.episode = self.queue.pop(0)
        self.ret, self.steps, self.done = 0.0, 0, False
        self.reruns = self.consecutive = self.rerun_episodes = 0

    def begin(self, faults) -> None:
        """(Re-)makes the env and resets it (fresh seed after a fault), retrying faults."""
        while True:
            try:
                if self.env is None:
                    self.env = self.make_env(self.episode)
                    self.dtype = self.gym.obs_dtype(self.env.observation_space)
                    space = type(self.env.action_space).__name__
                    self.discrete = space == "Discrete"
                    self.bounds = (self.env.action_space.low,
                                   self.env.action_space.high) if space == "Box" else None
                seed = (self.seed + self.episode + self.reruns * 7_919_993) % 2**31
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
        elif self.discrete:
            action = int(action)
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
            returns, lengths = self.results
            returns[self.episode], lengths[self.episode] = self.ret, self.steps
            if not self.queue:
                self.done = True
                self.close()
                return
            self.episode, self.reruns = self.queue.pop(0), 0
            self.begin(faults)

    def _fault(self, error: BaseException, where: str, faults) -> None:
        """Counts and logs the fault and drops the env (the caller waits the backoff).

        Raises:
          ActorError: too many faults (see ``play_gymnasium``).
        """
        self.close()
        self.consecutive += 1
        self.rerun_episodes += self.reruns == 0
        self.reruns += 1
        faults.fault(1, f"{self.gym.describe(error)} (in {where})",
                     "episode discarded, re-run on a re-made env with a fresh seed")
        if self.consecutive >= self.gym.MAX_CONSECUTIVE_FAULTS:
            raise errors.ActorError(
                f"{self.what}: {self.gym.gave_up(self.name, self.consecutive, where, error)}"
            ) from error
        if self.reruns > MAX_EVAL_RERUNS:
            raise errors.ActorError(
                f"{self.what}: an episode on {self.name} was cut by env faults "
                f"{self.reruns} times (limit MAX_EVAL_RERUNS={MAX_EVAL_RERUNS}), last in "
                f"{where}: {self.gym.describe(error)}"
            ) from error

    def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(Exception):  # closing a broken env must not raise
                self.env.close()
            self.env = None
