"""Host actor threads (Sebulba): step a Gymnasium vector env, infer on an actor device.

Each ``ActorThread`` owns one ``VectorEnv``. Before a rollout it takes
parameters from the ``ParamServer`` (copied once per version onto its actor
device; with ``param_refresh_steps`` only once that many of its env steps have
passed since the last fetch), then for ``T`` steps runs the jitted policy on the
actor device and steps the envs on the host. An agent may finish the rollout on
the actor device (Ape-X: n-step transitions and their priorities). The finished
``[T, B]`` batch is put straight onto the learner mesh (``to_learner``: envs split
over this process's learner devices) and handed to
the learner through a bounded queue. Every wait (parameters, queue) has a short
timeout and re-checks the stop event, so a stop request ends the thread within
a fraction of a second.

Faults: an exception raised by the environment's ``step`` is caught and counted
(``env_faults``). With ``sync`` vectorization only the sub-env that raised is
re-made with a fresh seed (``gymnasium_env.SubEnvFault``): the policy acts on its
fresh observation and it is stepped again, so its row of the step is a real
transition; with ``async`` the whole vector env is re-created and the step taken
again. Either way the rollout goes on, and each episode the fault cut ends at its
last good step, marked ``truncated`` (bootstrapped from its true next observation,
as at a time limit). A ``reset`` that raises (at creation, at a re-creation, at an
auto-reset) is retried on that one sub-env by ``gymnasium_env.ResetGuard`` and
counted the same way; a creation or re-creation that raises is retried here.
Retries in a row wait ``gymnasium_env.backoff_s``; ``MAX_CONSECUTIVE_FAULTS``
failed tries in a row (no successful step between) are fatal
(``gymnasium_env.EnvFailed``, quoting the env's last exception). Warnings
are rate-limited (``gymnasium_env.FaultLog``: one line per thread every
``LOG_EVERY_S`` s, with counts). Any other exception is fatal: it is stored in
``error``, the stop event is set and the thread ends.

Checkpoints: at the start of each rollout that ``snapshot_at`` names, a thread
fetches parameters and records an ``ActorState`` (its PRNG key, its envs' whole
state, its counters); the learner takes it with ``snapshot`` for the checkpoint
written after the update before that rollout. A thread built with ``start``
resumes from one: with ``--deterministic`` and envs whose state can be captured,
it then produces exactly the rollouts of the uninterrupted run.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrl_dist import types
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.sebulba import param_server as param_server_lib

log = logging.getLogger(__name__)

WAIT_S = 0.1  # longest single wait before re-checking the stop event
TIMERS = ("inference_s", "env_step_s", "actor_queue_wait_s", "transfer_s", "param_wait_s")


class Rollout(NamedTuple):
    """What an actor thread hands to the learner.

    ``traj`` leaves are ``[T, B_thread, ...]`` on the learner mesh (env axis
    sharded); the rest are host scalars covering this rollout.
    """

    traj: Any  # a Transition, or the agent's actor batch (Ape-X)
    version: int  # parameter version of the behaviour policy
    actor: int  # thread index
    env_steps: int  # T * B_thread
    episode_sums: tuple[float, float, int]  # finished episodes: return sum, length sum, count
    timings: dict[str, float]  # TIMERS, seconds spent in this rollout
    env_faults: int  # environment exceptions since the previous rollout


class ActorState(NamedTuple):
    """An actor thread's state at the start of rollout ``rollout_index`` (what a
    checkpoint holds to resume the thread there).

    ``env_state`` is ``VectorEnv.get_state()``: ``None`` where the envs' state cannot be
    captured (a resumed thread then starts fresh episodes).
    """

    rollout_index: int
    key_data: np.ndarray  # uint32 raw data of the thread's PRNG key
    env_state: bytes | None
    env_faults: int
    env_steps: int
    faults_unreported: int


class ActorSettings(NamedTuple):
    env: str  # gymnasium:<id>
    envs_per_thread: int
    rollout_len: int
    vectorization: str  # sync | async
    deterministic: bool
    seed: int
    param_refresh_steps: int = 0  # fetch new params after this many of the thread's env steps
    terminal_on_life_loss: bool = False  # Atari: a lost life ends the episode


class ActorThread(threading.Thread):
    """One actor thread; see the module docstring.

    Args:
      index: thread index ``k`` (seeds and ordering).
      settings: ``ActorSettings``.
      device: the actor device inference runs on.
      act_fn: jitted ``(params, obs [B, ...], key, env_ids [B]) -> (action, log_prob,
        dist_params, next_key)`` (an agent's ``host_act_fn``).
      params_server: where parameters come from.
      out: bounded queue of ``Rollout`` to the learner.
      to_learner: ``tree of [T, B, ...] -> tree on the learner mesh`` (the transfer).
      stop: set by anyone to stop every thread.
      make_env: ``(settings, seed) -> VectorEnv`` (tests inject faulty envs here; what
        it returns needs ``VectorEnv``'s ``num_envs``, ``obs``, ``step(action, only)``,
        ``recreate(seed, only)``, ``pop_faults``, ``pop_episode_sums``, ``get_state``,
        ``set_state``, ``close``).
      finish_fn: optional jitted ``(params, traj, env_ids) -> batch`` run on the actor
        device on each rollout before it is sent (an agent's ``actor_batch``).
      snapshot_at: ``rollout_index -> bool``: rollouts to start with a parameter fetch
        and an ``ActorState`` snapshot (checkpoint points), taken by ``snapshot``.
      start: an ``ActorState`` to resume from (``None``: a fresh start at rollout 0).
    """

    def __init__(
        self, index: int, settings: ActorSettings, device, act_fn: Callable,
        params_server: param_server_lib.ParamServer, out: queue.Queue, to_learner: Callable,
        stop: threading.Event, make_env: Callable | None = None,
        finish_fn: Callable | None = None, snapshot_at: Callable[[int], bool] | None = None,
        start: ActorState | None = None,
    ):
        super().__init__(name=f"actor-{index}", daemon=True)
        self.index = index
        self.settings = settings
        self.device = device
        self.act_fn = act_fn
        self.params_server = params_server
        self.out = out
        self.to_learner = to_learner
        self.stop = stop
        self.make_env = make_env or (
            lambda s, seed: gymnasium_env.make_vector(
                s.env, s.envs_per_thread, seed, s.vectorization, s.terminal_on_life_loss
            )
        )
        self.finish_fn = finish_fn
        self.env_ids = np.arange(
            index * settings.envs_per_thread, (index + 1) * settings.envs_per_thread,
            dtype=np.int32,
        )
        self.error: BaseException | None = None
        self.snapshot_at = snapshot_at or (lambda r: False)
        self.start_state = start
        self.env_faults = start.env_faults if start else 0
        self.env_steps = start.env_steps if start else 0
        self._faults_unreported = start.faults_unreported if start else 0
        self._consecutive = 0  # env faults since the last successful step
        self._fault_log = gymnasium_env.FaultLog(
            f"actor {index} ({settings.env})", lambda line: log.warning("%s", line)
        )
        self._snapshots: dict[int, ActorState] = {}
        self._snapshot_cond = threading.Condition()

    def snapshot(self, rollout_index: int, timeout: float) -> ActorState | None:
        """The ``ActorState`` taken at the start of rollout ``rollout_index`` (a rollout
        of ``snapshot_at``); waits up to ``timeout`` s, returns ``None`` if it is not
        there by then or the thread ended. Forgets older snapshots."""
        with self._snapshot_cond:
            self._snapshot_cond.wait_for(
                lambda: rollout_index in self._snapshots or not self.is_alive()
                or self.stop.is_set(), timeout=timeout,
            )
            for r in [r for r in self._snapshots if r < rollout_index]:
                del self._snapshots[r]
            return self._snapshots.get(rollout_index)

    def _take_snapshot(self, rollout_index: int, key, env) -> None:
        state = ActorState(
            rollout_index, np.asarray(jax.random.key_data(key)), env.get_state(),
            self.env_faults, self.env_steps, self._faults_unreported,
        )
        with self._snapshot_cond:
            self._snapshots[rollout_index] = state
            self._snapshot_cond.notify_all()

    def _seed(self) -> int:
        # Distinct per thread, per env (VectorEnv adds the env index), per re-creation
        # and per resume whose env state could not be restored.
        s, start = self.settings, self.start_state
        resumed = start.rollout_index if start is not None and start.env_state is None else 0
        return (s.seed * 1_000_003 + self.index * s.envs_per_thread
                + self.env_faults * 7_919_993 + resumed * 104_729) % (2**31)

    def run(self) -> None:
        env = None
        try:
            env = self._create()
            if env is None:  # stopped while retrying
                return
            if self.start_state is not None and self.start_state.env_state is not None:
                env.set_state(self.start_state.env_state)
            self._run(env)
        except BaseException as e:  # noqa: BLE001 - reported to the learner, which raises
            self.error = e
            log.error("actor thread %d failed: %r", self.index, e)
            self.stop.set()
        finally:
            if env is not None:
                env.close()
            with self._snapshot_cond:  # wakes a learner waiting for a snapshot
                self._snapshot_cond.notify_all()

    def _fault(self, error: BaseException, where: str, action: str, count: int = 1) -> None:
        """Counts and logs (rate-limited) ``count`` env faults in one try, the last in
        ``where`` raising ``error``; waits the backoff.

        Raises:
          EnvFailed: this is the ``MAX_CONSECUTIVE_FAULTS``-th try in a row that failed.
        """
        self._consecutive += 1
        self.env_faults += count
        self._faults_unreported += count
        self._fault_log.fault(count, f"{gymnasium_env.describe(error)} (in {where})",
                              action)
        if self._consecutive >= gymnasium_env.MAX_CONSECUTIVE_FAULTS:
            raise gymnasium_env.gave_up(
                self.settings.env, self._consecutive, where, error
            ) from error
        self.stop.wait(gymnasium_env.backoff_s(self._consecutive))

    def _absorbed(self, env) -> None:
        """Counts and logs the reset faults ``env``'s sub-envs absorbed (``ResetGuard``)."""
        count, last = env.pop_faults()
        if count:
            self.env_faults += count
            self._faults_unreported += count
            self._fault_log.fault(count, f"{last} (in reset)",
                                  "re-made that env and reset it with a fresh seed")

    def _create(self):
        """The thread's vector env from ``make_env``, retried with fresh seeds while it
        raises (``None``: stopped first). Raises EnvFailed (see ``_fault``)."""
        while not self.stop.is_set():
            try:
                env = self.make_env(self.settings, self._seed())
            except gymnasium_env.EnvFailed:
                raise
            except Exception as e:  # noqa: BLE001 - any env failure: retry
                self._fault(e, "creation", "retrying with a fresh seed")
                continue
            self._absorbed(env)
            return env
        return None

    def _recreate(self, env, error: BaseException, where: str) -> None:
        """After ``env`` raised ``error`` in ``where``: counts it and re-creates ``env``
        with fresh seeds until that works (or a stop). Raises EnvFailed (``_fault``)."""
        while True:
            self._fault(error, where,
                        "re-creating the vector env with a fresh seed (episodes in "
                        "progress cut: truncated at the last good step)")
            if self.stop.is_set():
                return
            try:
                env.recreate(self._seed())
            except gymnasium_env.EnvFailed:
                raise
            except Exception as e:  # noqa: BLE001 - any env failure: retry
                error, where = e, "re-creation"
                continue
            self._absorbed(env)
            return

    def _params(self, rollout_index: int, timings: dict) -> tuple[int, Any] | None:
        t0 = time.perf_counter()
        want = max(rollout_index - 1, 0) if self.settings.deterministic else None
        got = None
        while got is None and not self.stop.is_set():
            got = self.params_server.get(want, WAIT_S)
        timings["param_wait_s"] += time.perf_counter() - t0
        return got

    def _run(self, env: gymnasium_env.VectorEnv) -> None:
        s, start = self.settings, self.start_state
        key = jax.random.fold_in(jax.random.key(s.seed), 1_000 + self.index)
        if start is not None:
            key = jax.random.wrap_key_data(start.key_data, impl=jax.random.key_impl(key))
        key = jax.device_put(key, self.device)
        env_ids = jax.device_put(self.env_ids, self.device)
        rollout_index = start.rollout_index if start is not None else 0
        cached_version, params = -1, None
        steps_since_fetch = 0
        while not self.stop.is_set():
            timings = dict.fromkeys(TIMERS, 0.0)
            snapshot = self.snapshot_at(rollout_index)
            if snapshot:  # a resumed thread starts here: with a fetch, from this state
                self._take_snapshot(rollout_index, key, env)
            if params is None or steps_since_fetch >= s.param_refresh_steps or snapshot:
                got = self._params(rollout_index, timings)
                if got is None:
                    return
                version, published = got
                steps_since_fetch = 0
                if version != cached_version:
                    params = jax.device_put(published, self.device)
                    cached_version = version
            steps = self._act(env, params, key, env_ids, timings)
            if steps is None:  # a stop: the partial rollout is dropped
                continue
            key, columns = steps
            t0 = time.perf_counter()
            if self.finish_fn is not None:
                columns = self.finish_fn(params, jax.device_put(columns, self.device), env_ids)
            traj = self.to_learner(columns)
            timings["transfer_s"] += time.perf_counter() - t0
            steps_since_fetch += s.rollout_len * s.envs_per_thread
            self.env_steps += s.rollout_len * s.envs_per_thread
            rollout = Rollout(
                traj, cached_version, self.index, s.rollout_len * s.envs_per_thread,
                env.pop_episode_sums(), timings, self._faults_unreported,
            )
            self._faults_unreported = 0
            t0 = time.perf_counter()
            while not self.stop.is_set():
                try:
                    self.out.put(rollout, timeout=WAIT_S)
                    break
                except queue.Full:
                    continue
            timings["actor_queue_wait_s"] += time.perf_counter() - t0
            rollout_index += 1

    def _infer(self, params, obs, key, env_ids):
        """``((obs, action, log_prob, dist) numpy, next key)`` for ``obs`` ``[B, ...]``."""
        action, log_prob, dist, key = self.act_fn(params, obs, key, env_ids)
        # np.asarray per leaf: ~4x cheaper than one jax.device_get of the tuple on CPU.
        dist = jax.tree.map(np.asarray, dist)
        return (obs, np.asarray(action), np.asarray(log_prob), dist), key

    def _act(self, env, params, key, env_ids, timings):
        """``(key, Transition of numpy [T, B, ...])``, or ``None`` if a stop was requested.

        Faults in ``step``: sub-envs that raised (``SubEnvFault``, sync envs) are re-made
        and refilled (``_refill``); any other exception re-creates the whole vector env
        (``_recreate``) and the step is taken again. Either way the rollout goes on and
        every row is a real transition: the episodes a fault cut end at their last good
        step, marked ``truncated`` there (bootstrapped from their true next observation,
        like a time limit).
        """
        rows: list[tuple] = []  # (obs, action, log_prob, dist, Step) per step
        while len(rows) < self.settings.rollout_len:
            if self.stop.is_set():  # stop mid-rollout: the partial rollout is dropped
                return None
            t0 = time.perf_counter()
            acted, key = self._infer(params, env.obs, key, env_ids)
            t1 = time.perf_counter()
            timings["inference_s"] += t1 - t0
            try:
                step = env.step(acted[1])
            except gymnasium_env.EnvFailed:  # a sub-env's reset gave up: fatal
                raise
            except gymnasium_env.SubEnvFault as fault:
                refilled = self._refill(env, fault, params, key, env_ids, acted, rows)
                if refilled is None:
                    return None
                key, acted, step = refilled
            except Exception as e:  # noqa: BLE001 - any env failure: re-create and go on
                self._recreate(env, e, "step")
                timings["env_step_s"] += time.perf_counter() - t1
                if rows:  # the cut episodes end here (terminated ones stay so)
                    rows[-1] = _cut(rows[-1], np.ones(env.num_envs, bool))
                continue
            self._consecutive = 0
            self._absorbed(env)
            timings["env_step_s"] += time.perf_counter() - t1
            rows.append((*acted, step))
        obs, actions, log_probs, dists, steps = zip(*rows, strict=True)
        columns = types.Transition(
            obs=np.stack(obs),
            action=np.stack(actions),
            reward=np.stack([x.reward for x in steps]),
            terminated=np.stack([x.terminated for x in steps]),
            truncated=np.stack([x.truncated for x in steps]),
            next_obs=np.stack([x.next_obs for x in steps]),
            behaviour_log_prob=np.stack(log_probs),
            behaviour_dist=jax.tree.map(lambda *xs: np.stack(xs), *dists),
        )
        return key, columns

    def _refill(self, env, fault, params, key, env_ids, acted, rows):
        """After ``fault`` (some sub-envs raised in a step, the others stepped): counts it,
        cuts the failed sub-envs' episodes at their last good step (``rows[-1]``),
        re-makes them with fresh seeds, acts on their fresh observations and steps them,
        until every one has stepped. Returns ``(key, acted, step)`` with their rows
        replaced, or ``None`` on a stop. Raises EnvFailed (``_fault``)."""
        step, todo, errors, where = fault.step, fault.failed, fault.errors, "step"
        action = "re-making that env with a fresh seed (its episode cut: truncated at " \
                 "its last good step)"
        while True:
            self._fault(errors[-1], where, action, count=len(errors))
            if rows:
                rows[-1] = _cut(rows[-1], todo)
            if self.stop.is_set():
                return None
            try:
                env.recreate(self._seed(), only=todo)
            except gymnasium_env.EnvFailed:
                raise
            except Exception as e:  # noqa: BLE001 - any env failure: retry
                errors, where = [e], "re-creation"
                continue
            self._absorbed(env)
            where = "step"
            fresh, key = self._infer(params, env.obs, key, env_ids)
            try:
                redo, failed = env.step(fresh[1], only=todo), None
            except gymnasium_env.EnvFailed:
                raise
            except gymnasium_env.SubEnvFault as again:
                redo, failed, errors = again.step, again.failed, again.errors
            done = todo if failed is None else todo & ~failed
            acted, step = _merge(done, (acted, step), (fresh, redo))
            if failed is None:
                return key, acted, step
            todo = failed


def transition_shapes(spec, act_fn, params, rollout_len: int, envs_per_thread: int):
    """``ShapeDtypeStruct`` pytree of one actor's ``Transition`` ``[T, B, ...]``, for
    ``act_fn`` (an agent's ``act``) at ``params`` on ``spec``'s observations."""
    obs_dtype = getattr(spec, "obs_dtype", np.float32)  # uint8 pixels stay uint8
    obs = jax.ShapeDtypeStruct((envs_per_thread, *spec.obs_shape), obs_dtype)
    env_ids = jax.ShapeDtypeStruct((envs_per_thread,), np.int32)
    action, log_prob, dist, _ = jax.eval_shape(act_fn, params, obs, jax.random.key(0), env_ids)

    def timed(x, dtype=None):
        return jax.ShapeDtypeStruct((rollout_len, *x.shape), dtype or x.dtype)

    column = jax.ShapeDtypeStruct((envs_per_thread,), np.float32)
    return types.Transition(
        obs=timed(obs), action=timed(action), reward=timed(column),
        terminated=timed(column, np.bool_), truncated=timed(column, np.bool_),
        next_obs=timed(obs), behaviour_log_prob=timed(log_prob),
        behaviour_dist=jax.tree.map(timed, dist),
    )


def _rows(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _merge(mask: np.ndarray, old: Any, new: Any) -> Any:
    """``new``'s rows where ``mask`` (bool ``[B]``), ``old``'s elsewhere (pytrees of
    ``[B, ...]`` numpy arrays)."""
    return jax.tree.map(lambda a, b: np.where(_rows(mask, a), b, a), old, new)


def _cut(row: tuple, mask: np.ndarray) -> tuple:
    """``row`` (obs, action, log_prob, dist, Step) with the episodes of ``mask`` ended
    there: truncated unless they terminated."""
    step = row[-1]
    return (*row[:-1], step._replace(truncated=step.truncated | (mask & ~step.terminated)))
