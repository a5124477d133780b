"""Actor processes on Ray: the learner's side of a fleet (``--ray_actors``).

``Fleet`` connects to Ray (a local instance sized to the machine, or an existing
cluster at ``--ray_address``), starts one ``ray_actor.ActorProcess`` per actor on any
node with a free CPU, and publishes parameters: each version is put into Ray's object
store once (``ray.put``) and its reference sent to every actor, which fetches it from
the store of its own node. ``Fleet`` stands in for the ``ParamServer`` of actor
threads (``publish``, ``close``).

``RemoteActor`` is the learner's proxy of one actor process: a thread with the
interface ``host_training.HostPath`` uses of an ``ActorThread`` (``index``, ``error``,
``env_steps``, ``env_faults``, ``snapshot``; ``restarts`` too). It takes the actor's
finished rollouts (numpy, through object references; the actor holds at most
``queue_size`` ready ones), puts them on the learner mesh with ``to_learner`` and
hands them to the learner's bounded queue, exactly as a thread does.

Faults: when an actor process dies (its worker killed, its node gone), the proxy
drops the rollout in flight, starts a replacement at the rollout the learner waits
for next (fresh envs; a PRNG key of its own), counts it in ``restarts`` (logged
as ``actor_restarts``) and goes on. More than ``MAX_RESTARTS`` deaths within
``RESTART_WINDOW_S`` seconds over the fleet stop the run (``ActorError``).
"""

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.sebulba import actor as host_actor
from jaxrl_dist.sebulba import ray_actor

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # actor deaths tolerated within RESTART_WINDOW_S over the whole fleet
RESTART_WINDOW_S = 300.0
CONNECT_TIMEOUT_S = 20.0  # an address that does not answer: one line, well within 30 s
REMOTE_WAIT_S = 1.0  # how long one remote ``next_rollout`` call waits in the actor
EXTRA = 'pip install -e ".[ray]"'


def import_ray():
    """The ``ray`` module.

    Raises:
      ConfigError: Ray is not installed (names the extra).
    """
    try:
        import ray
    except ImportError:
        raise errors.ConfigError(
            f"--ray_actors needs Ray, which is not installed: {EXTRA}"
        ) from None
    return ray


def check_address(address: str | None) -> None:
    """Checks ``--ray_address`` before the run starts: Ray importable, and a ``host:port``
    answering a TCP connection within ``CONNECT_TIMEOUT_S``.

    Raises:
      ConfigError: Ray missing (names the extra), a malformed or unreachable address.
    """
    import_ray()
    if address not in (None, "", "auto"):
        _check_reachable(address)


def _check_reachable(address: str) -> None:
    """Raises ConfigError within ``CONNECT_TIMEOUT_S`` if ``host:port`` does not accept
    a TCP connection (Ray itself would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise errors.ConfigError(
            f"--ray_address must be 'auto' or host:port of a Ray head node, got {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise errors.ConfigError(
            f"--ray_address={address}: no Ray head node answers there ({e.strerror or e})"
        ) from None


def connect(address: str | None, num_actors: int) -> bool:
    """Connects this process to Ray; ``True`` if it started a local instance (which
    ``Fleet.close`` then shuts down). An already connected process keeps its connection.

    Args:
      address: ``None``: a local instance with ``max(cores, num_actors)`` CPUs; ``auto``
        or ``host:port``: an existing cluster.
      num_actors: actors to place (each takes one CPU of the cluster).

    Raises:
      ConfigError: Ray missing, an unreachable address, or too few CPUs in the cluster.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        check_address(address)
        local = address in (None, "")
        handlers = _signal_handlers()
        try:
            with warnings.catch_warnings():
                # Ray starts its processes with fork + exec (subprocess), which is safe
                # after JAX's threads exist; JAX warns about any fork.
                warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
                ray.init(
                    address="local" if local else address,  # local: always a new one
                    num_cpus=max(os.cpu_count() or 1, num_actors) if local else None,
                    include_dashboard=False, logging_level=logging.WARNING,
                    log_to_driver=True,
                )
        except ConnectionError as e:
            raise errors.ConfigError(
                f"--ray_address={address}: {str(e).splitlines()[0]}"
            ) from None
        finally:
            _restore(handlers)  # Ray's driver installs its own SIGTERM handler
        started = local
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < num_actors:
        if started:
            ray.shutdown()
        raise errors.ConfigError(
            f"--ray_actors={num_actors} needs {num_actors} CPUs in the Ray cluster, which "
            f"has {cpus:g}"
        )
    return started


def _signal_handlers() -> dict:
    """This process's Python handlers of SIGTERM and SIGINT (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


class Fleet:
    """Ray actor processes and the parameters they act with.

    Args:
      address: ``--ray_address`` (``None``: a local instance).
      num_actors: ``--ray_actors``.
      actor_args: ``index, start -> ActorProcess`` constructor keyword arguments (a
        callable returning a dict).

    Raises:
      ConfigError: see ``connect``.
    """

    def __init__(self, address: str | None, num_actors: int,
                 actor_args: Callable[[int, Any], dict[str, Any]]):
        self.ray = import_ray()
        self.started = connect(address, num_actors)
        self.actor_args = actor_args
        self._cls = self.ray.remote(num_cpus=1, max_concurrency=4)(ray_actor.ActorProcess)
        self._lock = threading.Lock()
        self._versions: dict[int, Any] = {}  # version -> object ref (the newest two)
        self._handles: dict[int, Any] = {}
        self.restart_limit = RestartLimit()
        self._closed = False

    def spawn(self, index: int, start: host_actor.ActorState | None):
        """Starts actor ``index`` (from ``start``) and sends it the kept versions (nothing
        once the fleet is closed)."""
        if self._closed:
            return None
        handle = self._cls.options(
            runtime_env={"env_vars": ray_actor.PROCESS_ENV},
            name=None,
        ).remote(**self.actor_args(index, start))
        with self._lock:
            self._handles[index] = handle
            for version, ref in sorted(self._versions.items()):
                handle.publish.remote(version, ref)
        return handle

    def wait_ready(self, timeout: float) -> None:
        """Waits up to ``timeout`` s until every actor process is up with its programs
        compiled (one that died meanwhile is its proxy's to replace)."""
        with self._lock:
            refs = [handle.ready.remote() for handle in self._handles.values()]
        with contextlib.suppress(self.ray.exceptions.RayError):
            self.ray.get(refs, timeout=timeout)

    def publish(self, version: int, params: Any) -> None:
        """Puts ``params`` (device arrays, replicated) into the object store once and
        sends the reference to every actor."""
        ref = self.ray.put(jax.tree.map(np.asarray, jax.device_get(params)))
        with self._lock:
            self._versions[version] = ref
            for old in [v for v in self._versions if v <= version - 2]:
                del self._versions[old]
            for handle in self._handles.values():
                handle.publish.remote(version, ref)

    def died(self, index: int, error: BaseException) -> None:
        """Records actor ``index``'s death (``RestartLimit.died``; may raise ActorError)."""
        with self._lock:
            self.restart_limit.died(index, error)

    def close(self) -> None:
        """Kills every actor process; shuts Ray down if this fleet started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles.values())
        for handle in handles:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(handle)
        if self.started:
            self.ray.shutdown()

    def handle(self, index: int):
        with self._lock:
            return self._handles[index]


class RestartLimit:
    """Counts actor deaths in a sliding window of ``window_s`` seconds.

    Args:
      max_restarts: deaths tolerated within the window.
      window_s: the window's length.
    """

    def __init__(self, max_restarts: int = MAX_RESTARTS, window_s: float = RESTART_WINDOW_S):
        self.max_restarts, self.window_s = max_restarts, window_s
        self._deaths: deque[float] = deque()

    def died(self, index: int, error: BaseException, now: float | None = None) -> None:
        """Records actor ``index``'s death (at ``now``, ``time.monotonic()`` seconds).

        Raises:
          ActorError: more than ``max_restarts`` deaths within the window (one line).
        """
        now = time.monotonic() if now is None else now
        self._deaths.append(now)
        while self._deaths and self._deaths[0] <= now - self.window_s:
            self._deaths.popleft()
        if len(self._deaths) > self.max_restarts:
            raise errors.ActorError(
                f"Ray actors died {len(self._deaths)} times within {self.window_s:g}s "
                f"(last: actor {index}: {_first_line(error)}); stopping"
            )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def random_action_sps(address: str | None, num_actors: int, env: str, envs: int,
                      vectorization: str, duration_s: float, seed: int) -> float:
    """The raw rate (env steps/s) of ``num_actors`` Ray actor processes each stepping a
    ``VectorEnv`` of ``envs`` envs with random actions, all at once (no inference, no
    learning): the ceiling a fleet is measured against.

    Raises:
      ConfigError: see ``connect``.
    """
    ray = import_ray()
    started = connect(address, num_actors)
    try:
        task = ray.remote(num_cpus=1)(ray_actor.random_action_steps).options(
            runtime_env={"env_vars": ray_actor.PROCESS_ENV})
        start_at = time.time() + 10.0 + 0.5 * num_actors  # after every process is up
        steps = ray.get([
            task.remote(env, envs, vectorization, duration_s, seed + k * envs, start_at)
            for k in range(num_actors)
        ])
    finally:
        if started:
            ray.shutdown()
    return float(sum(steps)) / duration_s


class RemoteActor(threading.Thread):
    """The learner's proxy of actor process ``index``; see the module docstring.

    Args:
      fleet: the ``Fleet``.
      index: the actor's global index.
      out: the bounded queue of ``host_actor.Rollout`` to the learner.
      to_learner: ``tree of [T, B, ...] numpy -> tree on the learner mesh``.
      stop: set by anyone to stop every actor.
      start: the ``ActorState`` to resume from (``None``: rollout 0).
      seed: the run's seed (keys of replacements).
    """

    def __init__(self, fleet: Fleet, index: int, out: queue.Queue, to_learner: Callable,
                 stop: threading.Event, start: host_actor.ActorState | None, seed: int):
        super().__init__(name=f"ray-actor-{index}", daemon=True)
        self.fleet, self.index, self.out, self.to_learner = fleet, index, out, to_learner
        self.stop, self.seed = stop, seed
        self.error: BaseException | None = None
        self.env_steps = start.env_steps if start else 0
        self.env_faults = start.env_faults if start else 0
        self.restarts = 0
        self.next_index = start.rollout_index if start else 0  # the rollout to hand on next
        fleet.spawn(index, start)

    def snapshot(self, rollout_index: int, timeout: float) -> host_actor.ActorState | None:
        """The actor's ``ActorState`` at the start of ``rollout_index`` (``None`` if not
        there within ``timeout`` s, or the actor died meanwhile)."""
        ray = self.fleet.ray
        ref = self.fleet.handle(self.index).snapshot.remote(rollout_index, timeout)
        try:
            return ray.get(ref, timeout=timeout + 5.0)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                ray.exceptions.ActorUnavailableError):
            return None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported to the learner, which raises
            self.error = e
            log.error("Ray actor %d failed: %s", self.index, e)
            self.stop.set()

    def _run(self) -> None:
        ray = self.fleet.ray
        lost = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
        ref = None
        while not self.stop.is_set():
            if ref is None:
                ref = self.fleet.handle(self.index).next_rollout.remote(REMOTE_WAIT_S)
            ready, _ = ray.wait([ref], timeout=host_actor.WAIT_S)
            if not ready:
                continue
            t0 = time.perf_counter()
            try:
                got = ray.get(ref)
            except lost as e:
                if self.stop.is_set():  # the run is closing: the fleet killed it
                    return
                ref = None
                self._replace(e)
                continue
            ref = None
            if got is None:
                continue
            if not isinstance(got, host_actor.Rollout):  # ("error", message): it failed
                raise errors.ActorError(f"Ray actor {self.index} failed: {got[1]}")
            # Ask for the next one first: its call overlaps this one's hand-on (the
            # actor's own bounded queue still limits what it produces).
            ref = self.fleet.handle(self.index).next_rollout.remote(REMOTE_WAIT_S)
            self._hand_on(got, t0)

    def _hand_on(self, rollout: host_actor.Rollout, t0: float) -> None:
        traj = self.to_learner(rollout.traj)
        rollout.timings["transfer_s"] += time.perf_counter() - t0
        rollout = rollout._replace(traj=traj)
        self.env_steps += rollout.env_steps
        self.env_faults += rollout.env_faults
        t0 = time.perf_counter()
        while not self.stop.is_set():
            try:
                self.out.put(rollout, timeout=host_actor.WAIT_S)
                break
            except queue.Full:
                continue
        rollout.timings["actor_queue_wait_s"] += time.perf_counter() - t0
        self.next_index += 1

    def _replace(self, error: BaseException) -> None:
        """After the actor process died: counts it (``Fleet.died`` may raise) and starts
        a replacement at rollout ``next_index`` with fresh envs and its own key."""
        self.restarts += 1
        log.warning("Ray actor %d died (%s); replacing it at rollout %d (restart %d)",
                    self.index, _first_line(error), self.next_index, self.restarts)
        self.fleet.died(self.index, error)
        key = jax.random.fold_in(jax.random.key(self.seed), 1_000 + self.index)
        key = jax.random.fold_in(key, 7_919 + self.restarts)
        start = host_actor.ActorState(
            self.next_index, np.asarray(jax.random.key_data(key)), None, self.env_faults,
            self.env_steps, 0,
        )
        with contextlib.suppress(Exception):  # already gone
            self.fleet.ray.kill(self.fleet.handle(self.index))
        self.fleet.spawn(self.index, start)
