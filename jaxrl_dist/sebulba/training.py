"""Host-actor ("Sebulba") runs: actor threads, a parameter server, learner devices.

``train_host`` builds a ``HostPath`` and hands it to the run shell
(``run/shell.py``), which owns everything a run does besides acting and
learning. Actor threads (``sebulba/actor.py``), or Ray actor processes
(``sebulba/ray_fleet.py``, ``sebulba/ray_actor.py``), step Gymnasium vector envs and
infer with the agent's ``act``; the parameter server (``sebulba/param_server.py``)
hands them versioned parameters. What the learner (the path's loop, on the main
thread) does with their rollouts is the path's ``LearnerStep``:

  ``RolloutStep`` (every agent but A3C): update ``u`` takes rollout ``u`` from each
    actor's own bounded queue and runs the agent's compiled ``learn`` on them
    together on the learner mesh (``sebulba/learner.py``). Acting and learning
    overlap: while the learner trains on rollout ``r``, actors collect ``r + 1``.
  ``a3c.GradientStep`` (``--agent=a3c``, ``AgentSpec.needs_workers``): each update
    applies one worker's gradient, in arrival order from one shared queue
    (``sebulba/a3c.py``, ``agents/a3c/agent.py``).

Either way every update publishes the new parameters as the next version.

Stopping: Ctrl-C (``KeyboardInterrupt`` on this thread), a fatal error in any
actor thread, or a stalled queue sets the shared stop event; every thread's
waits time out within ``actor.WAIT_S`` and the threads are joined; the
parameters of the last finished update are kept in checkpoint/; the exception is
re-raised so the entry point exits non-zero.

Checkpoints (with a workdir): every ``checkpoint_every`` updates and at the end,
``sebulba/checkpoint.py`` saves the learner state, the behaviour parameters and (with
a step that keeps ``snapshots``) every actor's state at the start of the next
rollout; ``resume`` goes on from the latest one (bit for bit in deterministic mode
with envs whose state can be captured; without snapshots the actors start fresh
episodes). Checkpoints are also log points.
"""

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist import agents, distributed, errors, parallel, tuning
from jaxrl_dist.agents import common
from jaxrl_dist.envs import episodes as evaluation
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.run import checkpoint, files, memory, shell, writers
from jaxrl_dist.run.progress import ProgressFn
from jaxrl_dist.run.settings import RunSettings
from jaxrl_dist.sebulba import a3c, ray_fleet
from jaxrl_dist.sebulba import actor as host_actor
from jaxrl_dist.sebulba import checkpoint as host_checkpoint
from jaxrl_dist.sebulba import learner as host_learner
from jaxrl_dist.sebulba import metrics as host_metrics
from jaxrl_dist.sebulba import param_server as param_server_lib

JOIN_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class HostSettings:
    """How acting is laid out on the host and the devices.

    ``actor_threads`` threads run per actor device, each with its own vector
    env of ``envs_per_thread`` envs, so one update trains on
    ``actor_threads * len(actor_devices) * envs_per_thread`` envs.
    ``learner_devices=None``: every device not acting, or device 0 if there is one.
    ``ray_actors > 0``: that many Ray actor processes (``sebulba/ray_fleet.py``) act
    instead of threads, each with ``envs_per_thread`` envs (``actor_threads`` and
    ``actor_devices`` then do not apply; every local device may learn); ``ray_address``:
    the cluster to join (``None``: a local Ray instance).
    """

    actor_threads: int = 2
    envs_per_thread: int = 8
    vectorization: str = "sync"
    deterministic: bool = False
    actor_devices: tuple[int, ...] = (0,)
    learner_devices: tuple[int, ...] | None = None
    queue_size: int = 1
    param_refresh_steps: int = 0  # a thread's env steps between parameter fetches (0: each rollout)
    stall_timeout_s: float = 120.0  # the learner gives up on an actor silent this long
    ray_actors: int = 0  # Ray actor processes instead of threads (0: threads)
    ray_address: str | None = None  # None: a local Ray instance; auto or host:port
    terminal_on_life_loss: bool = False  # Atari games: a lost life ends the episode

    @property
    def num_threads(self) -> int:
        """Actors (threads, or Ray actor processes) of this process."""
        if self.ray_actors:
            return self.ray_actors
        return self.actor_threads * len(self.actor_devices)

    @property
    def num_envs(self) -> int:
        return self.num_threads * self.envs_per_thread

    def resolve(self, num_devices: int) -> "HostSettings":
        """Fills in ``learner_devices`` and checks every value.

        Raises:
          ConfigError: a one-line message naming the flag.
        """
        for name in ("actor_threads", "envs_per_thread", "queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise errors.ConfigError(f"--{name} must be a positive integer, got {value!r}")
        if not isinstance(self.ray_actors, int) or self.ray_actors < 0:
            raise errors.ConfigError(
                f"--ray_actors must be an integer >= 0 (0: actor threads), got "
                f"{self.ray_actors!r}"
            )
        if not isinstance(self.param_refresh_steps, int) or self.param_refresh_steps < 0:
            raise errors.ConfigError(
                f"--param_refresh_steps must be an integer >= 0, got {self.param_refresh_steps!r}"
            )
        if self.vectorization not in gymnasium_env.VECTORIZATION_MODES:
            raise errors.ConfigError(
                f"--vectorization must be one of {', '.join(gymnasium_env.VECTORIZATION_MODES)}"
                f", got {self.vectorization!r}"
            )
        learner_devices = self.learner_devices
        if learner_devices is None and self.ray_actors:
            learner_devices = tuple(range(num_devices))  # no local device acts
        elif learner_devices is None:
            rest = tuple(i for i in range(num_devices) if i not in self.actor_devices)
            learner_devices = rest or (0,)
        for name, ids in (("actor_devices", self.actor_devices),
                          ("learner_devices", learner_devices)):
            if not ids or any(not 0 <= i < num_devices for i in ids) or len(set(ids)) != len(ids):
                raise errors.ConfigError(
                    f"--{name} must be distinct device indices in 0..{num_devices - 1}, "
                    f"got {','.join(map(str, ids)) or 'none'}"
                )
        if self.envs_per_thread % len(learner_devices):
            raise errors.ConfigError(
                f"--envs_per_thread={self.envs_per_thread} must be divisible by the number of "
                f"learner devices ({len(learner_devices)})"
            )
        return dataclasses.replace(self, learner_devices=tuple(learner_devices))


def host_config(config: common.OnDeviceConfig, host: HostSettings, num_processes: int = 1):
    """``config`` for host actors: ``num_envs`` from the actor layout (over all
    ``num_processes`` processes; an agent of gradient workers (A3C): one worker's envs,
    what one gradient sees), no simulated lag."""
    changes: dict[str, Any] = {"num_envs": host.num_envs * num_processes}
    if agents.AGENTS[config.agent].needs_workers:
        changes["num_envs"] = host.envs_per_thread
    if hasattr(config, "policy_lag"):
        changes["policy_lag"] = 0  # the lag is real here (measured, not simulated)
    return dataclasses.replace(config, **changes)


def _run_meta(config, settings: RunSettings, host: HostSettings, num_processes: int) -> dict:
    """What a resumed run must share with the checkpointed one (JSON-able)."""
    layout = dataclasses.asdict(host)
    # These change how fast and where, not what is computed.
    for name in ("stall_timeout_s", "queue_size", "ray_address"):
        del layout[name]
    layout.update(actor_devices=len(host.actor_devices),
                  learner_devices=len(host.learner_devices))
    return {
        "config": {k: writers.jsonable(v) for k, v in dataclasses.asdict(config).items()},
        "seed": settings.seed, "host": layout, "num_processes": num_processes,
    }


def _wait_for(get: Callable[[float], Any], threads, index: int, stop: threading.Event,
              stall_s: float, what: str) -> Any:
    """``get(timeout)``'s first non-``None`` value, polled every ``WAIT_S`` s.

    Raises:
      ActorError: some actor thread failed (named first), thread ``index`` stopped, or
        nothing came within ``stall_s`` s (``what`` names what was awaited).
    """
    t0 = time.perf_counter()
    while True:
        value = get(host_actor.WAIT_S)
        if value is not None:
            return value
        if stop.is_set() or not threads[index].is_alive():
            for thread in threads:
                if isinstance(thread.error, errors.ActorError):  # already says which
                    raise thread.error
                if thread.error is not None:
                    raise errors.ActorError(
                        f"actor thread {thread.index} failed: {thread.error!r}"
                    ) from thread.error
            raise errors.ActorError(f"actor thread {index} stopped without a {what}")
        if time.perf_counter() - t0 > stall_s:
            raise errors.ActorError(
                f"no {what} from actor thread {index} in {stall_s:g}s (stalled env?)"
            )


def _get_rollout(q: queue.Queue, stop: threading.Event, threads, index: int, stall_s: float):
    def get(timeout):
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None

    return _wait_for(get, threads, index, stop, stall_s, "rollout")


def _snapshot(threads, index: int, rollout_index: int, stop: threading.Event,
              stall_s: float) -> host_actor.ActorState:
    """Thread ``index``'s state at the start of ``rollout_index`` (waits for it)."""
    return _wait_for(lambda timeout: threads[index].snapshot(rollout_index, timeout), threads,
                     index, stop, stall_s, f"snapshot of rollout {rollout_index}")


class StepParts(NamedTuple):
    """What a ``LearnerStep`` builds on (``HostPath`` makes it once, before compiling)."""

    agent: Any  # the agent (``agents.base.Agent``) of the run's validated config
    learner: host_learner.HostLearner
    host: HostSettings  # resolved
    num_processes: int
    train_key: jax.Array  # the learner's PRNG key (folded with the update step inside)


class LearnerStep(Protocol):
    """What one update of a ``HostPath`` waits for and learns with.

    ``snapshots``: actors snapshot their state at checkpoints, and a checkpoint holds
    every actor's state (``False``: the learner's state alone; a resumed run's actors
    start fresh episodes with new env seeds and keys).
    """

    snapshots: bool

    def title(self, config, host: HostSettings) -> str:
        """The run's title (plots, tables)."""

    def queues(self, host: HostSettings) -> list[queue.Queue]:
        """``[host.num_threads]`` bounded queues: actor ``k`` hands its rollouts to
        entry ``k`` (entries may be one shared queue)."""

    def rollouts_per_update(self, host: HostSettings) -> int:
        """``n``: update ``u`` takes the next rollout from each of ``queues[:n]``."""

    def to_learner(self, parts: StepParts) -> Callable[[Any], Any]:
        """``tree of [T, B_thread, ...] -> tree on the learner mesh`` (what an actor's
        rollout ``traj`` becomes on its way into the queue)."""

    def compile(self, parts: StepParts, state: host_learner.HostState,
                sent_shapes: Callable[[], Any]) -> None:
        """Compiles the update for ``state``; ``sent_shapes()``: tree of
        ``ShapeDtypeStruct`` ``[T, B_thread, ...]``, what one actor sends per rollout."""

    def learn(self, state: host_learner.HostState,
              rollouts: list[host_actor.Rollout]) -> tuple[host_learner.HostState, Any]:
        """``(state, metrics)`` after one update on ``rollouts`` (the compiled update,
        dispatched, not awaited)."""

    def extend_record(self, record: dict[str, Any]) -> None:
        """Adds the step's own entries to a log point's ``record`` (in place)."""

    def done_text(self, summary: dict[str, Any]) -> str:
        """The middle of the final ``done:`` line (``shell.ActingPath.done_text``)."""


class RolloutStep:
    """The default ``LearnerStep``: update ``u`` takes rollout ``u`` of every actor (each
    from its own queue of ``queue_size``) and runs the agent's compiled ``learn`` on
    them together (``HostLearner.compile_update``); actors snapshot at checkpoints."""

    snapshots = True

    def title(self, config, host: HostSettings) -> str:
        del host
        return f"{agents.AGENTS[config.agent].title} on {config.env} (host actors)"

    def queues(self, host: HostSettings) -> list[queue.Queue]:
        return [queue.Queue(maxsize=host.queue_size) for _ in range(host.num_threads)]

    def rollouts_per_update(self, host: HostSettings) -> int:
        return host.num_threads

    def to_learner(self, parts: StepParts) -> Callable[[Any], Any]:
        return _to_learner(parts.learner.traj_sharding, parts.num_processes)

    def compile(self, parts: StepParts, state: host_learner.HostState,
                sent_shapes: Callable[[], Any]) -> None:
        num_processes = parts.num_processes
        shapes = jax.tree.map(  # [T, B_thread * num_processes, ...]: one thread per process
            lambda x: jax.ShapeDtypeStruct(
                (x.shape[0], x.shape[1] * num_processes, *x.shape[2:]), x.dtype,
                sharding=parts.learner.traj_sharding,
            ),
            sent_shapes(),
        )
        self.train_key = parts.train_key
        self.update = parts.learner.compile_update(
            state, (shapes,) * parts.host.num_threads, parts.train_key
        )

    def learn(self, state: host_learner.HostState,
              rollouts: list[host_actor.Rollout]) -> tuple[host_learner.HostState, Any]:
        return self.update(state, tuple(r.traj for r in rollouts), self.train_key)

    def extend_record(self, record: dict[str, Any]) -> None:
        del record  # the host path's record as it is

    def done_text(self, summary: dict[str, Any]) -> str:
        return (f"{summary['compile_s']:.1f}s compile | policy lag mean "
                f"{summary['policy_lag/mean']:.2f} | env faults {summary['env_faults']}")


def step_for(config, host: HostSettings) -> LearnerStep:
    """``config.agent``'s ``LearnerStep``: ``a3c.GradientStep`` for an agent that learns
    from gradient workers (``AgentSpec.needs_workers``: A3C), else ``RolloutStep``.

    Raises:
      ConfigError: ``agents.check_host`` refuses the layout (A3C without
        ``ray_actors``, or ``deterministic``).
    """
    if agents.AGENTS[config.agent].needs_workers:
        return a3c.GradientStep(config, host)
    return RolloutStep()


def train_host(
    config: common.OnDeviceConfig,
    settings: RunSettings,
    host: HostSettings,
    workdir: str | None = None,
    log: Callable[[str], None] = print,
    progress_fn: ProgressFn | None = None,
    make_env: Callable | None = None,
) -> dict[str, Any]:
    """Trains ``config.agent`` on ``config.env`` (``gymnasium:<id>``) with host actors.

    Args:
      config: the agent's config; ``num_envs`` is replaced by the actor layout's.
      settings: seed, evaluation, logging and checkpoint settings (``num_seeds`` must
        be 1; ``chunk_compile`` does not apply).
      host: the actor/learner layout.
      workdir: where the run's files go (``None``: nothing is written).
      log: receives one-line messages.
      progress_fn: ``(env_steps, metrics)`` at every log point (default: a console line).
      make_env: ``(ActorSettings, seed) -> VectorEnv``-like factory (tests).

    Returns:
      ``shell.run``'s summary (``resumed_from`` included), plus ``compile_s``,
      ``actor_env_steps`` (all steps the actors took, counted from the run's start),
      ``env_faults``, ``policy_lag/*`` (over the whole run) and ``state`` (the
      learner's final ``HostState``).

    Raises:
      ConfigError: bad settings (also ``agents.check_host``'s: A3C without
        ``ray_actors`` or with ``deterministic``), or ``resume`` finds no checkpoint or
        one made with another config or actor layout (before anything compiles).
      ActorError: an actor thread failed or stalled (threads joined, parameters of the
        last finished update saved in checkpoint/).
      NonFiniteError: a NaN/inf (the last finite parameters saved in checkpoint/).
      KeyboardInterrupt: on Ctrl-C (threads joined, parameters saved in checkpoint/).
    """
    path = HostPath(config, settings, host, log, make_env)  # its step: step_for(config, host)
    try:
        summary = shell.run(path, settings, workdir, log, progress_fn)
    finally:
        path.close()  # also when a check before training refused the run
    return dict(summary, state=path.state)


class HostPath:
    """The host-actor acting path of ``shell.run`` (``shell.ActingPath``).

    Actor threads (or Ray actor processes' proxies) are made in ``prepare``, started by
    ``log_points`` and joined by ``close``. What each update takes from them and learns
    with is ``learner_step``'s (a ``LearnerStep``; ``None``: ``step_for(config, host)``);
    checkpoints hold the learner state, the behaviour parameters and (with
    ``learner_step.snapshots``) every actor's state at the start of its next rollout.

    Raises:
      ConfigError: bad settings or layout.
    """

    saves_on_interrupt = False  # a whole-run checkpoint needs the actors' snapshots

    def __init__(self, config, settings: RunSettings, host: HostSettings, log,
                 make_env: Callable | None = None, learner_step: LearnerStep | None = None):
        self.learner_step = learner_step if learner_step is not None else step_for(config, host)
        agents.check_host_seeds(config.env, settings.num_seeds)
        # Several processes: each runs the same layout on its own (local) devices; device
        # indices in ``host`` are local; the learner mesh spans every process's learners.
        self.num_processes, self.process = jax.process_count(), jax.process_index()
        self.primary = self.process == 0
        self.host = host = host.resolve(jax.local_device_count())
        if host.ray_actors and self.num_processes > 1:
            raise errors.ConfigError(
                "--ray_actors works with one learner process (--num_processes=1); the Ray "
                "cluster supplies the actors"
            )
        self.config = config = host_config(config, host, self.num_processes).validate(
            len(host.learner_devices) * self.num_processes
        )
        self.settings, self.log, self.make_env = settings, log, make_env
        self.spec = gymnasium_env.make_spec(config.env)
        mesh = parallel.process_mesh(host.learner_devices)
        agent = agents.make_agent(config, self.spec, mesh.size, tuning.for_mesh(mesh))
        self.agent, self.fns = agent, agent.functions()
        self.learner = host_learner.HostLearner(self.fns, mesh)
        self.num_seeds = 1
        self.num_updates, self.steps_per_update = config.num_updates, config.steps_per_update
        self.title = self.learner_step.title(config, host)
        self.identity = _run_meta(config, settings, host, self.num_processes)
        self.init_key, self.train_key = jax.random.split(jax.random.key(settings.seed))
        self.parts = StepParts(agent, self.learner, host, self.num_processes, self.train_key)
        self.state = self.behaviour = None
        self.actor_starts = [None] * host.num_threads
        self.lags = host_metrics.LagStats()
        self.newest_updates = 0
        self.good: tuple[int, Any] | None = None  # (update, params) of the last finite log point
        self.threads: list[host_actor.ActorThread] = []
        self.stop = threading.Event()
        self.server = param_server_lib.ParamServer(keep=2)
        if host.ray_actors:  # connected now: a bad address fails before anything is written
            self.server = ray_fleet.Fleet(host.ray_address, host.ray_actors, self._actor_args)

    def config_record(self) -> dict[str, Any]:
        settings = {k: v for k, v in dataclasses.asdict(self.settings).items()
                    if k != "chunk_compile"}  # the on-device chunk's setting
        return dict(
            acting="host", **settings,
            **{f"host_{k}": v for k, v in dataclasses.asdict(self.host).items()},
            backend=jax.default_backend(), num_processes=self.num_processes,
        )

    def memory_parts(self) -> tuple[list[memory.Part], Any, dict[str, Any]]:
        abstract = files.abstract_state(
            self.learner.init, (self.init_key,), self.learner.state_shardings
        )
        # A rollout of every thread of every process, split over the learner mesh.
        steps = self.steps_per_update // self.learner.mesh.size
        parts = memory.run_parts(self.config, abstract, self.spec.obs_shape, steps)
        return parts, self.learner.mesh.devices.flat[0], memory.flag_values(self.config, 1)

    def restore(self, checkpointer, step: int) -> None:
        abstract = files.abstract_state(
            self.learner.init, (self.init_key,), self.learner.state_shardings
        )
        try:
            self.state, self.behaviour, actors, meta = host_checkpoint.restore(
                checkpointer, step, abstract, abstract.params
            )
        except (ValueError, KeyError) as e:
            raise errors.ConfigError(
                f"--resume: the checkpoint in {checkpointer.directory} does not fit this "
                f"run: {e}"
            ) from None
        threads = self.host.num_threads
        if self.learner_step.snapshots:
            self.actor_starts = actors[self.process * threads:(self.process + 1) * threads]
        else:
            self.actor_starts = _fresh_starts(self.settings.seed, step, threads)
        self.lags = host_metrics.LagStats(*meta.get("policy_lag", ()))
        self.newest_updates = step

    def chunk(self, start_update: int) -> int:
        del start_update
        return 1

    def prepare(self, start_update: int, every: int, saving: bool) -> dict[str, Any]:
        if self.state is None:
            self.state = self.learner.init(self.init_key)
            self.behaviour = self.state.params  # what rollout u acts with: version u - 1
        host = self.host
        self.every = every
        if host.ray_actors:  # the actor processes start (and compile) while the learner does
            self.threads = self._make_threads(saving)
        if start_update:
            self.server.publish(start_update - 1, _local(self.behaviour))
        self.server.publish(start_update, _local(self.state.params))
        t0 = time.time()
        self._compile()
        compile_s = time.time() - t0
        timings = {"compile_s": compile_s}
        if host.ray_actors:  # the training clock starts once every actor process is up
            self.server.wait_ready(host.stall_timeout_s)
            timings["actors_ready_s"] = time.time() - t0
        actors = (f"{host.ray_actors} Ray actor process(es) x {host.envs_per_thread} envs"
                  if host.ray_actors else
                  f"{host.num_threads} actor thread(s) x {host.envs_per_thread} envs on "
                  f"device(s) {list(host.actor_devices)}")
        self.log(
            f"compiled in {compile_s:.1f}s: {self.num_updates} updates of "
            f"{self.steps_per_update} env steps; {actors}, learner on "
            f"{list(host.learner_devices)}"
            + (f", resumed at update {start_update}" if start_update else "")
        )
        if not host.ray_actors:
            self.threads = self._make_threads(saving)
        return timings

    def _actor_settings(self) -> host_actor.ActorSettings:
        host, config = self.host, self.config
        return host_actor.ActorSettings(
            config.env, host.envs_per_thread, config.rollout_len, host.vectorization,
            host.deterministic, self.settings.seed, host.param_refresh_steps,
            host.terminal_on_life_loss,
        )

    def _actor_args(self, index: int, start) -> dict[str, Any]:
        """``ray_actor.ActorProcess``'s keyword arguments for actor ``index`` from
        ``start`` (``snapshot_at``: ``None`` unless checkpoints are saved and the step
        keeps ``snapshots``)."""
        return dict(
            index=index, config=self.config, spec=self.spec,
            num_learner_devices=self.learner.mesh.size, settings=self._actor_settings(),
            queue_size=self.host.queue_size,
            snapshot_at=self.schedule if self.saving else None, start=start,
            make_env=self.make_env,
        )

    def _compile(self) -> None:
        """Compiles the step's update and (on every actor device) the actors' steps."""
        host = self.host
        self.finish_fn = jax.jit(self.fns.actor_step) if self.fns.actor_step else None
        env_ids = np.arange(host.envs_per_thread, dtype=np.int32)

        @functools.cache  # traced once, and only where needed
        def transition():
            return host_actor.transition_shapes(
                self.spec, self.fns.act, self.state.params, self.config.rollout_len,
                host.envs_per_thread,
            )

        def sent():
            return transition() if self.finish_fn is None else jax.eval_shape(
                self.finish_fn, self.state.params, transition(), env_ids
            )

        self.learner_step.compile(self.parts, self.state, sent)
        devices = jax.local_devices()
        actor_devices = () if host.ray_actors else host.actor_devices  # Ray: they compile
        for device in (devices[i] for i in actor_devices):
            put = lambda x, d=device: jax.device_put(x, d)
            params = put(_local(self.state.params))
            obs = np.zeros((host.envs_per_thread, *self.spec.obs_shape), self.spec.obs_dtype)
            jax.block_until_ready(
                self.fns.act(params, put(obs), put(jax.random.key(0)), put(env_ids))
            )
            if self.finish_fn is not None:
                zeros = jax.tree.map(lambda x, p=put: p(np.zeros(x.shape, x.dtype)),
                                     transition())
                jax.block_until_ready(self.finish_fn(params, zeros, put(env_ids)))

    def _make_threads(self, saving: bool) -> list:
        """The actor threads (or, with Ray, the proxies of the actor processes, which
        start those processes), not yet started."""
        host = self.host
        devices = jax.local_devices()
        self.queues = self.learner_step.queues(host)
        self.saving = saving
        self.schedule = (CheckpointSchedule(self.every, self.num_updates)
                         if self.learner_step.snapshots else None)  # where actors take snapshots
        to_learner = self.learner_step.to_learner(self.parts)
        if host.ray_actors:
            return [
                ray_fleet.RemoteActor(self.server, k, self.queues[k], to_learner, self.stop,
                                      self.actor_starts[k], self.settings.seed)
                for k in range(host.num_threads)
            ]
        actor_settings = self._actor_settings()
        return [
            host_actor.ActorThread(  # global thread index: seeds, env ids, keys
                self.process * host.num_threads + k, actor_settings,
                devices[host.actor_devices[k // host.actor_threads]], self.fns.act,
                self.server, self.queues[k], to_learner, self.stop,
                self.make_env, self.finish_fn,
                snapshot_at=self.schedule if saving else None,
                start=self.actor_starts[k],
            )
            for k in range(host.num_threads)
        ]

    def _is_checkpoint(self, updates: int) -> bool:  # also a log point and an actor snapshot
        return CheckpointSchedule(self.every, self.num_updates)(updates)

    def _is_log_point(self, updates: int) -> bool:
        log_every = max(1, self.num_updates // max(1, self.settings.log_points))
        return updates % log_every == 0 or updates == self.num_updates or (
            self._is_checkpoint(updates))

    def log_points(self, start_update: int, every: int) -> Iterator[shell.LogPoint]:
        """Per update: the step's rollouts, its update, the new parameters published; at
        log points the interval's record (with the step's own entries)."""
        del every
        for thread in self.threads:
            thread.start()
        self.good = (start_update, self.state.params)  # last log point with finite values
        all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
            [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
        )))
        interval, t_last = host_metrics.Interval(), time.time()
        for u in range(start_update, self.num_updates):
            self._update(u, interval)
            if not self._is_log_point(u + 1):
                continue
            now = time.time()
            interval.actor_env_steps = sum(t.env_steps for t in self.threads)
            interval.env_faults = sum(t.env_faults for t in self.threads)
            interval.actor_restarts = sum(getattr(t, "restarts", 0) for t in self.threads)
            if self.num_processes > 1:
                host_metrics.gather_interval(interval)
            record = host_metrics.record(interval, (u + 1) * self.steps_per_update, now - t_last)
            self.learner_step.extend_record(record)
            self.lags.add(interval.lags)
            guard = (interval, bool(all_finite(self.state.params)))
            yield shell.LogPoint(u + 1, record, self._is_checkpoint(u + 1), guard)
            interval, t_last = host_metrics.Interval(), now

    def _update(self, u: int, interval: host_metrics.Interval) -> None:
        """Update ``u``: waits for the step's rollouts (``RolloutStep``: rollout ``u`` of
        every thread), learns, publishes version ``u + 1``."""
        host = self.host
        t0 = time.perf_counter()
        rollouts = [
            _get_rollout(self.queues[k], self.stop, self.threads, k, host.stall_timeout_s)
            for k in range(self.learner_step.rollouts_per_update(host))
        ]
        t1 = time.perf_counter()
        previous = self.state.params
        self.state, metrics = self.learner_step.learn(self.state, rollouts)
        self.server.publish(u + 1, _local(self.state.params))
        jax.block_until_ready(metrics)
        self.newest_updates = u + 1
        self.behaviour = previous if host.deterministic else self.state.params
        interval.timings["learner_queue_wait_s"] += t1 - t0
        interval.timings["update_s"] += time.perf_counter() - t1
        for r in rollouts:
            interval.add_rollout(r, u)  # lag: version u minus the rollout's
        interval.metrics.append(metrics)

    def pending(self) -> list[shell.LogPoint]:
        return []  # a log point is recorded as soon as it is made

    def check_finite(self, point: shell.LogPoint, where: str) -> None:
        del where  # the last finite parameters are saved in checkpoint/ on failure
        interval, params_finite = point.guard
        host_metrics.check_finite(interval, point.updates, params_finite, self.good[0])
        self.good = (point.updates, self.state.params)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"policy_lag": list(self.lags)}

    def save(self, checkpointer, updates: int, meta: dict[str, Any]) -> None:
        actor_states = [
            _snapshot(self.threads, k, updates, self.stop, self.host.stall_timeout_s)
            for k in range(self.host.num_threads)
        ] if self.learner_step.snapshots else []
        host_checkpoint.save(
            checkpointer, updates, self.state, self.behaviour, actor_states, meta
        )

    def close(self) -> None:
        self.stop.set()
        fleet = self.server if isinstance(self.server, ray_fleet.Fleet) else None
        if fleet is None:
            self.server.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S  # for all threads together
        for thread in self.threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        if fleet is not None:
            fleet.close()  # kills the actor processes (their proxies have stopped)

    def failure_params(self, nonfinite: bool) -> Any:
        """The last finished update's parameters (after a non-finite value: those of
        the last log point where everything was finite). Saved by the primary alone (a
        failing run's peers may never reach a save)."""
        if self.state is None:
            return None
        params = self.good[1] if nonfinite and self.good else self.state.params
        return jax.device_get(_local(params))

    def evaluate(self) -> np.ndarray:
        """Greedy returns ``[1, eval_episodes]`` on fresh host envs; an episode cut by an
        env fault is re-run (``evaluation.evaluate_on_host``; ActorError when the env
        keeps failing)."""
        params = jax.device_get(_local(self.state.params))
        returns = evaluation.evaluate_on_host(
            self.config.env, self.fns.policy, self.fns.mode, params,
            self.settings.eval_episodes, self.settings.seed + 2**30,
            self.spec.max_episode_steps, log=self.log,
        )
        return np.asarray(returns)[None]

    def final_params(self) -> tuple[Any, Any]:
        params = jax.device_get(_local(self.state.params))
        if self.num_processes > 1:
            distributed.check_same_everywhere(
                checkpoint.params_sha256(params), "params_sha256"
            )
        return params, self.state.params

    def summary_extras(self, run_steps: int) -> dict[str, Any]:
        del run_steps
        totals = np.array([sum(t.env_steps for t in self.threads),
                           sum(t.env_faults for t in self.threads)], np.int64)
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            totals = np.asarray(multihost_utils.process_allgather(totals)).sum(axis=0)
        return {"actor_env_steps": int(totals[0]), "env_faults": int(totals[1]),
                "actor_restarts": sum(getattr(t, "restarts", 0) for t in self.threads),
                **self.lags.summary()}

    def done_text(self, summary: dict[str, Any]) -> str:
        return self.learner_step.done_text(summary)

    def curve(self, history: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[h["train/episode_return"]] for h in history], dtype=np.float64
                        ).reshape(len(history), 1)


class CheckpointSchedule(NamedTuple):
    """``updates -> bool``: the updates after which a checkpoint is written (also log
    points, and the rollouts where actors take a snapshot). Picklable: Ray actor
    processes get it too."""

    every: int
    num_updates: int

    def __call__(self, updates: int) -> bool:
        return 0 < updates <= self.num_updates and (
            updates % self.every == 0 or updates == self.num_updates)


def _fresh_starts(seed: int, rollout_index: int, num_threads: int) -> list:
    """``ActorState``s that start ``num_threads`` actors at ``rollout_index`` in fresh
    episodes: no env state (``ActorThread._seed`` then takes new env seeds from the
    rollout index) and new PRNG keys (the run's seed folded with the index, then the
    actor's)."""
    key = jax.random.fold_in(jax.random.key(seed), rollout_index)
    return [
        host_actor.ActorState(
            rollout_index=rollout_index,
            key_data=np.asarray(jax.random.key_data(jax.random.fold_in(key, k))),
            env_state=None, env_faults=0, env_steps=0, faults_unreported=0,
        )
        for k in range(num_threads)
    ]


def _local(tree: Any) -> Any:
    """This process's copy of replicated ``tree`` (its first addressable shard)."""
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def _to_learner(sharding, num_processes: int) -> Callable:
    """``tree of [T, B_thread, ...] -> tree on the learner mesh``: one process's thread's
    rollout as its part of a ``[T, B_thread * num_processes, ...]`` global array."""
    if num_processes == 1:
        return lambda tree: jax.device_put(tree, sharding)

    def put(x):
        shape = (x.shape[0], x.shape[1] * num_processes, *x.shape[2:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return lambda tree: jax.tree.map(put, tree)


