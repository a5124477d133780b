"""Gymnasium vector environments stepped on the host, for host actors (Sebulba).

``--env=gymnasium:<id>`` names a Gymnasium environment; a bare id is a gymnax
environment on device. Gymnasium 1.x vector envs auto-reset in
``AutoresetMode.NEXT_STEP`` by default: the step after an episode ends returns
the reset observation with reward 0 and ignores the action, a transition that
does not exist in the MDP. We build every vector env in ``SAME_STEP`` mode
instead: the step that ends an episode already returns the reset observation,
and ``info["final_obs"]`` holds the true last observation, so each step is a
real transition ``(obs, action, reward, next_obs)`` exactly as in the gymnax
adapter: truncation bootstraps from V(next_obs), termination does not.

Faults (an env that raises): every sub-env is wrapped in ``ResetGuard``, so a
``reset`` that raises (at creation, at a re-creation, or at an auto-reset inside
``step``) re-makes that one env and resets it with a fresh seed, after a backoff
(``backoff_s``); these faults come back through the reset's info (``FAULTS_KEY``)
and ``VectorEnv.pop_faults`` hands them over. With ``sync`` vectorization the
sub-envs are stepped here one by one, so a ``step`` that raises is that sub-env's
alone: the others are stepped, ``SubEnvFault`` says which failed, and the caller
re-makes just those (``recreate(seed, only=...)``) and steps them again
(``step(action, only=...)``). With ``async`` vectorization a raising ``step``
leaves the vector env in an unknown state: the caller re-creates all of it
(see actors/host_actor.py). Whoever retries gives up after
``MAX_CONSECUTIVE_FAULTS`` faults in a row with ``EnvFailed``, whose one-line
message quotes the env's own last exception; ``FaultLog`` keeps the warnings to
one line per env every ``LOG_EVERY_S`` seconds.
"""

import contextlib
import functools
import importlib
import math
import pickle
import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode

from jaxrl_dist import errors
from jaxrl_dist.envs import atari, envpool_env
from jaxrl_dist.envs.spec import EnvSpec, Step

PREFIX = "gymnasium:"
VECTORIZATION_MODES = ("sync", "async")

# An env that raises this many times in a row (reset or step, with no successful step
# in between; re-creations included) is broken, not flaky: the run ends with EnvFailed
# (an actor thread's fatal error; the learner raises errors.ActorError). With a reset
# that fails 1 time in 10 a sub-env gives up once in 1e10 resets; an env that always
# fails ends the run after the backoffs below, about 2.3 s.
MAX_CONSECUTIVE_FAULTS = 10
BACKOFF_S = 0.01  # wait before the 2nd try in a row; doubled for each further one...
BACKOFF_MAX_S = 1.0  # ...up to this (the 1st retry after an isolated fault waits 0 s)
LOG_EVERY_S = 5.0  # at most one fault warning per env (actor thread, evaluation) this often
FAULTS_KEY = "jaxrl_dist_env_faults"  # reset info: faults absorbed by ResetGuard (int)
FAULT_ERROR_KEY = "jaxrl_dist_env_fault_error"  # reset info: the last one (describe)


class EnvFailed(RuntimeError):
    """An env raised ``MAX_CONSECUTIVE_FAULTS`` times in a row; the message (one line)
    names the env and quotes its last exception (type and message)."""

    def __init__(self, message: Any):
        # An async vector env re-raises a worker's error as ``type(error)(error)``.
        super().__init__(str(message))


def describe(error: BaseException) -> str:
    """``RuntimeError: what it said`` on one line (newlines folded)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def backoff_s(consecutive: int) -> float:
    """Seconds to wait before retrying after the ``consecutive``-th fault in a row
    (``consecutive >= 1``): 0, then ``BACKOFF_S`` doubling up to ``BACKOFF_MAX_S``."""
    if consecutive <= 1:
        return 0.0
    return min(BACKOFF_S * 2.0 ** (consecutive - 2), BACKOFF_MAX_S)


def gave_up(env: str, consecutive: int, where: str, error: BaseException) -> EnvFailed:
    """The ``EnvFailed`` for ``env`` after ``consecutive`` faults in a row, the last in
    ``where`` (``reset``, ``step``, ...)."""
    return EnvFailed(
        f"{env} raised {consecutive} times in a row (limit MAX_CONSECUTIVE_FAULTS="
        f"{MAX_CONSECUTIVE_FAULTS}), last in {where}: {describe(error)}"
    )


class SubEnvFault(RuntimeError):
    """Some sub-envs of a ``sync`` ``VectorEnv`` raised in ``step``; the others were
    stepped.

    Attributes: ``step`` (the ``Step``; rows of ``failed`` are meaningless), ``failed``
    (bool ``[B]``), ``errors`` (what each failed sub-env raised, in order). The message
    is the first one's ``describe``.
    """

    def __init__(self, step: "Step", failed: np.ndarray, errors: list[BaseException]):
        super().__init__(describe(errors[0]))
        self.step, self.failed, self.errors = step, failed, errors


class FaultLog:
    """Rate-limited fault warnings of one env (an actor thread's, an evaluation's).

    ``fault`` counts; at most one line per ``every_s`` seconds is passed to ``emit``,
    with the faults since the previous line and in all (``total``).
    """

    def __init__(self, name: str, emit: Callable[[str], None], every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.emit, self.every_s, self.clock = name, emit, every_s, clock
        self.total = 0
        self._since = 0
        self._last = -math.inf

    def fault(self, count: int, error: str, action: str) -> None:
        """Counts ``count`` faults, the last of which raised ``error`` (``describe``);
        ``action``: what is done about them."""
        self.total += count
        self._since += count
        now = self.clock()
        if now - self._last >= self.every_s:
            self.emit(f"{self.name}: env raised {error}; {action} ({self._since} fault(s) "
                      f"since the last such line, {self.total} in all; at most one line "
                      f"per {self.every_s:g}s)")
            self._since, self._last = 0, now


def make_single(env_id: str, terminal_on_life_loss: bool = False, **kwargs) -> gymnasium.Env:
    """One env of a Gymnasium id (no ``gymnasium:`` prefix; ``module:EnvId`` imports the
    module first, as ``gymnasium.make`` does). ``ALE/*`` ids get the Atari preprocessing
    of ``envs/atari.py`` (``terminal_on_life_loss`` applies to them only); ``kwargs`` go
    to ``gymnasium.make``.

    Raises:
      whatever ``gymnasium.make`` raises; ModuleNotFoundError for an ALE id without ale-py.
    """
    if atari.is_atari(env_id):
        return atari.make(env_id, terminal_on_life_loss, **kwargs)
    return gymnasium.make(env_id, **kwargs)


def _guarded_env(env_id: str, terminal_on_life_loss: bool) -> gymnasium.Env:
    """``make_single`` wrapped in ``ResetGuard`` (module level: async workers unpickle it)."""
    return ResetGuard(make_single(env_id, terminal_on_life_loss), env_id, terminal_on_life_loss)


class ResetGuard(gymnasium.Wrapper):
    """Retries a ``reset`` that raises: re-makes the env (``make_single(env_id)``) and
    resets it with a fresh seed, waiting ``backoff_s`` before each retry.

    The number of faults and the last one (``describe``) are added to the info of the
    reset that finally works (``FAULTS_KEY``, ``FAULT_ERROR_KEY``).

    Raises:
      EnvFailed: ``MAX_CONSECUTIVE_FAULTS`` tries in a row raised.
    """

    terminal_on_life_loss = False  # (instances pickled before the attribute existed)

    def __init__(self, env: gymnasium.Env, env_id: str, terminal_on_life_loss: bool = False):
        super().__init__(env)
        self.env_id = env_id
        self.terminal_on_life_loss = terminal_on_life_loss
        self._seed = 0  # the last seed asked for; fresh seeds are derived from it
        self._remakes = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._seed = int(seed)
        faults, error = 0, None
        while True:
            try:
                if faults:
                    with contextlib.suppress(Exception):  # it may be broken
                        self.env.close()
                    self.env = make_single(self.env_id, self.terminal_on_life_loss)
                    self._remakes += 1
                    seed = (self._seed + self._remakes * 7_919_993) % 2**31
                obs, info = self.env.reset(seed=seed, options=options)
                break
            except Exception as e:  # noqa: BLE001 - any env failure: re-make and retry
                faults, error = faults + 1, e
                if faults >= MAX_CONSECUTIVE_FAULTS:
                    raise gave_up(PREFIX + self.env_id, faults, "reset", e) from e
                time.sleep(backoff_s(faults))
        if faults:
            info = dict(info, **{FAULTS_KEY: faults, FAULT_ERROR_KEY: describe(error)})
        return obs, info


def is_gymnasium(env: str) -> bool:
    """Whether ``env`` names a host environment with Gymnasium's API: ``gymnasium:<id>``,
    or ``envpool:<Game>-v5`` (``envs/envpool_env.py``)."""
    return env.startswith(PREFIX) or envpool_env.is_envpool(env)


def gymnasium_id(env: str) -> str:
    """``CartPole-v1`` for ``gymnasium:CartPole-v1``; ``ALE/Pong-v5`` for ``envpool:Pong-v5``
    (the Gymnasium env with the same preprocessing: evaluation and videos use it)."""
    if envpool_env.is_envpool(env):
        return envpool_env.gymnasium_id(env)
    return env[len(PREFIX):]


def make_vector(env: str, num_envs: int, seed: int, vectorization: str = "sync",
                terminal_on_life_loss: bool = False):
    """``VectorEnv`` for ``gymnasium:<id>``, ``envpool_env.EnvPoolVectorEnv`` for
    ``envpool:<Game>-v5`` (same interface; see their docstrings for what they raise)."""
    if envpool_env.is_envpool(env):
        return envpool_env.EnvPoolVectorEnv(env, num_envs, seed, vectorization,
                                            terminal_on_life_loss)
    return VectorEnv(env, num_envs, seed, vectorization, terminal_on_life_loss)


def obs_dtype(space: Any) -> Any:
    """The dtype observations of ``space`` are kept in: uint8 stays uint8 (pixels), any
    other dtype becomes float32."""
    return np.uint8 if np.dtype(space.dtype) == np.uint8 else np.float32


def make_spec(env: str) -> EnvSpec:
    """Builds one env of ``gymnasium:<id>`` to read its spaces.

    Raises:
      ConfigError: the id is not registered, cannot be built, or its spaces are
        not a Box observation and a Discrete or 1-D Box action; an ``envpool:`` game
        EnvPool does not have (or EnvPool is not installed).
    """
    if envpool_env.is_envpool(env):
        envpool_env.check(env)
        return make_spec(PREFIX + envpool_env.gymnasium_id(env))
    env_id = gymnasium_id(env)
    module, _, name = env_id.rpartition(":")  # Gymnasium's own "module:EnvId" form
    if module:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any failure to import is bad input
            raise errors.ConfigError(
                f"--env={env}: module {module!r} cannot be imported ({type(e).__name__}: {e})"
            ) from None
        env_id = name
    if atari.is_atari(env_id):
        try:
            atari.register()
        except ModuleNotFoundError:
            raise errors.ConfigError(
                f"--env={env} needs ale-py: pip install -e \".[atari]\"") from None
    if atari.is_atari(env_id) and env_id not in gymnasium.registry:
        raise errors.ConfigError(
            f"--env={env}: {env_id!r} is not an ALE game (e.g. ALE/Pong-v5, ALE/Breakout-v5; "
            f"{len(atari.game_ids())} in all)")
    if env_id not in gymnasium.registry:
        known = ", ".join(sorted(k for k in gymnasium.registry if "/" not in k)[:12])
        raise errors.ConfigError(
            f"--env={env}: {env_id!r} is not a registered Gymnasium id (e.g. {known}, ...)"
        )
    try:
        single = make_single(gymnasium_id(env))
    except Exception as e:  # noqa: BLE001 - any failure to build the env is bad input
        raise errors.ConfigError(f"--env={env} could not be created: {e}") from None
    try:
        obs_space, action_space = single.observation_space, single.action_space
        max_steps = single.spec.max_episode_steps if single.spec is not None else None
    finally:
        single.close()
    if type(obs_space).__name__ != "Box":
        raise errors.ConfigError(
            f"--env={env} has a {type(obs_space).__name__} observation space; only Box is "
            "supported"
        )
    name = type(action_space).__name__
    if name == "Discrete":
        action_dim, discrete = int(action_space.n), True
    elif name == "Box" and len(action_space.shape) == 1:
        action_dim, discrete = int(action_space.shape[0]), False
    else:
        raise errors.ConfigError(
            f"--env={env} has a {name} action space; Discrete or a 1-D Box is supported"
        )
    return EnvSpec(tuple(obs_space.shape), action_space, action_dim, discrete, max_steps,
                   obs_dtype(obs_space))


class VectorEnv:
    """``num_envs`` copies of a Gymnasium env in one vector env, ``SAME_STEP`` autoreset.

    Args:
      env: ``gymnasium:<id>``.
      num_envs: ``B``.
      seed: env ``i`` is reset with seed ``seed + i`` at creation.
      vectorization: ``sync`` (in this thread) or ``async`` (one spawned process per env).

    Running episode returns and lengths are tracked here (host side);
    ``pop_episode_sums`` hands over those of the episodes finished since the last call.
    Every sub-env is wrapped in ``ResetGuard``; ``pop_faults`` hands over the reset
    faults it absorbed.

    Raises (construction, ``recreate``): whatever making or resetting the envs raises;
    ``EnvFailed`` when a sub-env's reset raised ``MAX_CONSECUTIVE_FAULTS`` times in a row.
    """

    def __init__(self, env: str, num_envs: int, seed: int, vectorization: str = "sync",
                 terminal_on_life_loss: bool = False):
        self.env_id = gymnasium_id(env)
        self.num_envs = num_envs
        self.vectorization = vectorization
        self.terminal_on_life_loss = terminal_on_life_loss
        self._env = None
        self._faults: list[Any] = [0, None]  # reset faults absorbed, the last (describe)
        self._unpicklable = False  # get_state found the envs do not pickle: not tried again
        self._open(seed)

    def _open(self, seed: int) -> None:
        make = functools.partial(_guarded_env, self.env_id, self.terminal_on_life_loss)
        if self.vectorization == "async":
            # Worker processes are spawned, not forked: forking a process that runs
            # JAX's threads can deadlock the child.
            self._env = gymnasium.vector.AsyncVectorEnv(
                [make] * self.num_envs, context="spawn",
                autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            self._env = gymnasium.vector.SyncVectorEnv(
                [make] * self.num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self._obs_dtype = obs_dtype(self._env.single_observation_space)
        space = self._env.single_action_space
        self._box_bounds = (
            (space.low, space.high) if type(space).__name__ == "Box" else None
        )
        obs, info = self._env.reset(seed=seed)
        self._note_faults(info)
        self.obs = np.asarray(obs, self._obs_dtype)
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)
        self._finished = [0.0, 0.0, 0]  # return sum, length sum, count

    def recreate(self, seed: int, only: np.ndarray | None = None) -> None:
        """Closes the (possibly broken) vector env and builds a fresh one reset with ``seed``
        (env ``i`` with ``seed + i``); with ``only`` (bool ``[B]``, ``sync`` only), re-makes
        just those sub-envs (after a ``SubEnvFault``).

        Their episodes in progress are dropped from the statistics. Raises what making
        or resetting an env raises (``EnvFailed``: see ``ResetGuard``); may be called
        again after it did.
        """
        if only is None:
            self.close()
            self._open(seed)
            return
        envs = self._env.envs
        for i in np.flatnonzero(only):
            with contextlib.suppress(Exception):  # closing a broken env must not raise
                envs[i].close()
            envs[i] = _guarded_env(self.env_id, self.terminal_on_life_loss)
            obs, info = envs[i].reset(seed=(seed + int(i)) % 2**31)
            self._note_single(info)
            self.obs[i] = obs
            self._returns[i], self._lengths[i] = 0.0, 0

    def step(self, action: np.ndarray, only: np.ndarray | None = None) -> Step:
        """Steps every env (with ``only``, bool ``[B]``: just those) with ``action`` ``[B]``
        (or ``[B, A]``, clipped to the Box bounds); rows outside ``only`` of the result
        are meaningless.

        Raises:
          SubEnvFault: (``sync``) some sub-envs raised; the others were stepped (the
            exception holds their ``Step``); re-make the failed ones with
            ``recreate(seed, only=fault.failed)``.
          EnvFailed: a sub-env's auto-reset failed ``MAX_CONSECUTIVE_FAULTS`` times.
          Exception: (``async``) whatever the environment raised; the vector env may
            then be broken (call ``recreate``).
        """
        if self._box_bounds is not None:
            action = np.clip(action, *self._box_bounds)
        if self.vectorization == "sync":
            obs, reward, terminated, truncated, next_obs, failed = self._step_sync(action, only)
        else:
            obs, reward, terminated, truncated, next_obs = self._step_vector(action)
            failed = None
        stepped = np.ones(self.num_envs, bool) if only is None else only.copy()
        if failed is not None:
            stepped &= ~failed[0]
        done = (terminated | truncated) & stepped
        self._returns[stepped] += reward[stepped]
        self._lengths[stepped] += 1
        if done.any():
            self._finished[0] += float(self._returns[done].sum())
            self._finished[1] += float(self._lengths[done].sum())
            self._finished[2] += int(done.sum())
            self._returns[done] = 0.0
            self._lengths[done] = 0
        self.obs = obs
        step = Step(obs, reward, terminated, truncated, next_obs)
        if failed is not None:
            self._returns[failed[0]], self._lengths[failed[0]] = 0.0, 0
            raise SubEnvFault(step, *failed)
        return step

    def _step_vector(self, action: np.ndarray):
        """Gymnasium's vector step (``async``): ``(obs, reward, terminated, truncated,
        next_obs)``."""
        obs, reward, terminated, truncated, info = self._env.step(action)
        obs = np.asarray(obs, self._obs_dtype)
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool) & ~terminated
        next_obs = obs
        if (terminated | truncated).any():
            next_obs = obs.copy()
            final = info["final_obs"]
            for i in np.flatnonzero(terminated | truncated):
                next_obs[i] = final[i]
        if FAULTS_KEY in info:  # a sub-env's auto-reset raised and was retried
            self._note_faults(info)
        return obs, np.asarray(reward, np.float32), terminated, truncated, next_obs

    def _step_sync(self, action: np.ndarray, only: np.ndarray | None):
        """The sub-envs stepped here one by one (``SAME_STEP`` auto-reset), each fault
        caught on its own: ``(obs, reward, terminated, truncated, next_obs, failed)``,
        ``failed`` ``None`` or ``(bool [B], [exception, ...])``."""
        n = self.num_envs
        obs, next_obs = self.obs.copy(), self.obs.copy()
        reward = np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        failed, errors = np.zeros(n, bool), []
        envs = self._env.envs
        for i in range(n) if only is None else np.flatnonzero(only):
            try:
                o, r, te, tr, _ = envs[i].step(action[i])
                next_obs[i] = o
                if te or tr:
                    o, info = envs[i].reset()
                    self._note_single(info)
            except EnvFailed:
                raise
            except Exception as e:  # noqa: BLE001 - any env failure: reported per sub-env
                failed[i] = True
                errors.append(e)
                continue
            obs[i], reward[i], terminated[i], truncated[i] = o, r, te, tr and not te
        return (obs, reward, terminated, truncated, next_obs,
                (failed, errors) if errors else None)

    def get_state(self) -> bytes | None:
        """This vector env's whole state as bytes (a pickle), or ``None`` where it cannot be
        captured.

        The state: every sub-env (its wrappers, its simulator state, its ``np_random``),
        the observations to act on, the running episode statistics. ``None`` for
        ``async`` vectorization (the envs live in worker processes) and for envs that
        pickle by re-construction (``gymnasium.utils.EzPickle``: MuJoCo, Box2D, Atari),
        whose pickles would silently hold a fresh env instead of this one. In
        ``SAME_STEP`` autoreset mode a ``SyncVectorEnv`` keeps no other state between
        steps. ``None`` too for envs that do not pickle (an env made by a lambda or a
        local function: threads never pickle it), from the first failed try on.
        """
        if self.vectorization != "sync" or self._unpicklable or any(
            isinstance(e.unwrapped, EzPickle) for e in self._env.envs
        ):
            return None
        try:
            return pickle.dumps((self._env.envs, self.obs, self._returns, self._lengths,
                                 self._finished))
        except (pickle.PicklingError, AttributeError, TypeError):
            self._unpicklable = True
            return None

    def set_state(self, state: bytes) -> None:
        """Restores a state from :meth:`get_state` of a vector env made with the same id,
        size and vectorization (the pickle is trusted: it comes from our checkpoint)."""
        envs, self.obs, self._returns, self._lengths, finished = pickle.loads(state)  # noqa: S301
        if len(envs) != self.num_envs:
            raise ValueError(f"the state holds {len(envs)} envs, this vector env has "
                             f"{self.num_envs}")
        for env in self._env.envs:
            env.close()
        self._env.envs = [  # a state saved before ResetGuard existed holds bare envs
            e if isinstance(e, ResetGuard)
            else ResetGuard(e, self.env_id, self.terminal_on_life_loss) for e in envs
        ]
        self._finished = list(finished)

    def _note_single(self, info: dict[str, Any]) -> None:
        """Notes the reset faults in one sub-env's reset ``info``."""
        if FAULTS_KEY in info:
            self._faults[0] += int(info[FAULTS_KEY])
            self._faults[1] = info[FAULT_ERROR_KEY]

    def _note_faults(self, info: dict[str, Any]) -> None:
        """Notes the reset faults in a vector env's reset/step ``info``."""
        if FAULTS_KEY not in info:
            return
        mask = info[f"_{FAULTS_KEY}"]
        self._faults[0] += int(np.asarray(info[FAULTS_KEY])[mask].sum())
        self._faults[1] = next(e for e in info[FAULT_ERROR_KEY][mask][::-1] if e)

    def pop_faults(self) -> tuple[int, str | None]:
        """``(count, last)``: reset faults its sub-envs absorbed (``ResetGuard``) since the
        last call, and the last one's ``describe`` text (``None`` if none)."""
        faults, self._faults = tuple(self._faults), [0, None]
        return faults

    def pop_episode_sums(self) -> tuple[float, float, int]:
        """``(return_sum, length_sum, count)`` of episodes finished since the last call."""
        sums, self._finished = tuple(self._finished), [0.0, 0.0, 0]
        return sums

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):  # closing a broken env must not raise
                self._env.close()
            self._env = None


def random_action_sps(
    env: str, num_threads: int, envs_per_thread: int, vectorization: str = "sync",
    duration_s: float = 5.0, seed: int = 0,
) -> float:
    """Raw stepping rate (env steps/s) of ``num_threads`` threads, each stepping its own
    ``VectorEnv`` of ``envs_per_thread`` envs with uniformly random actions.

    The ceiling host actors are measured against: the same vector envs, the same
    thread layout, no inference and no learning.
    """
    import threading
    import time

    spec = make_spec(env)
    counts = [0] * num_threads
    start = threading.Barrier(num_threads + 1)
    deadline = [float("inf")]  # set once every thread is ready

    def work(k: int) -> None:
        vec = make_vector(env, envs_per_thread, seed + k * envs_per_thread, vectorization)
        rng = np.random.default_rng(seed + k)
        if spec.discrete:
            actions = [rng.integers(0, spec.action_dim, envs_per_thread) for _ in range(64)]
        else:
            low, high = spec.action_space.low, spec.action_space.high
            actions = [
                rng.uniform(low, high, (envs_per_thread, spec.action_dim)).astype(np.float32)
                for _ in range(64)
            ]
        start.wait()
        try:
            i = 0
            while time.perf_counter() < deadline[0]:
                vec.step(actions[i % 64])
                i += 1
            counts[k] = i * envs_per_thread
        finally:
            vec.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(num_threads)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    deadline[0] = t0 + duration_s
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)
