"""The host-actor (Sebulba) run: actor threads, parameter server, learner devices.

Actor threads (``actors/host_actor.py``) step Gymnasium vector envs and infer
on actor devices; the learner (this module's loop, on the main thread) takes
one rollout from each thread's bounded queue, runs the compiled update on the
learner mesh and publishes the new parameters as the next version. Acting and
learning overlap: while the learner trains on rollout ``r``, actors already
collect rollout ``r + 1``.

Stopping: Ctrl-C (``KeyboardInterrupt`` on this thread), a fatal error in any
actor thread, or a stalled queue sets the shared stop event; every thread's
waits time out within ``WAIT_S`` and the threads are joined; the parameters of
the last finished update are checkpointed; the exception is re-raised so the
entry point exits non-zero.

Checkpoints (with a workdir): every ``checkpoint_every`` updates and at the end,
``host_checkpoint`` saves the learner state, the behaviour parameters and every
actor thread's state at the start of the next rollout; ``resume`` goes on from
the latest one (bit for bit in deterministic mode with envs whose state can be
captured). Checkpoints are also log points.
"""

import dataclasses
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist import (
    checkpoint,
    distributed,
    errors,
    evaluation,
    host_checkpoint,
    parallel,
    types,
    writers,
)
from jaxrl_dist import training as training_lib
from jaxrl_dist.actors import host_actor
from jaxrl_dist.actors import param_server as param_server_lib
from jaxrl_dist.agents import AGENTS, common, host_learner
from jaxrl_dist.envs import gymnasium_env
from jaxrl_dist.training import RunSettings, checkpoint_period, read_history

JOIN_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class HostSettings:
    """How acting is laid out on the host and the devices.

    ``actor_threads`` threads run per actor device, each with its own vector
    env of ``envs_per_thread`` envs, so one update trains on
    ``actor_threads * len(actor_devices) * envs_per_thread`` envs.
    ``learner_devices=None``: every device not acting, or device 0 if there is one.
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

    @property
    def num_threads(self) -> int:
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
        if learner_devices is None:
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
    ``num_processes`` processes), no simulated lag."""
    changes: dict[str, Any] = {"num_envs": host.num_envs * num_processes}
    if hasattr(config, "policy_lag"):
        changes["policy_lag"] = 0  # the lag is real here (measured, not simulated)
    return dataclasses.replace(config, **changes)


def _transition_shapes(spec, act_fn, params, rollout_len: int, envs_per_thread: int):
    """``ShapeDtypeStruct`` pytree of one thread's ``Transition`` ``[T, B, ...]``."""
    obs = jax.ShapeDtypeStruct((envs_per_thread, *spec.obs_shape), np.float32)
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


class _Interval:
    """Host-side sums over the updates between two log points."""

    def __init__(self):
        self.lags: list[int] = []
        self.episodes = [0.0, 0.0, 0]
        self.timings = dict.fromkeys(
            (*host_actor.TIMERS, "learner_queue_wait_s", "update_s"), 0.0
        )
        self.metrics: list[dict] = []
        self.env_steps = 0
        self.actor_env_steps = 0  # every step the actors took so far (run totals)
        self.env_faults = 0

    def add_rollout(self, rollout: host_actor.Rollout, version: int) -> None:
        self.lags.append(version - rollout.version)
        for i, value in enumerate(rollout.episode_sums):
            self.episodes[i] += value
        for name, value in rollout.timings.items():
            self.timings[name] += value
        self.env_steps += rollout.env_steps


class _LagStats:
    """Running min, sum, max and count of policy lags (the run's summary; checkpointed)."""

    def __init__(self, low: float = np.inf, total: int = 0, high: float = -np.inf,
                 count: int = 0):
        self.low, self.total, self.high, self.count = low, total, high, count

    def add(self, lags: list[int]) -> None:
        if lags:
            self.low, self.high = min(self.low, min(lags)), max(self.high, max(lags))
            self.total, self.count = self.total + sum(lags), self.count + len(lags)

    def __iter__(self):
        return iter((int(self.low), self.total, int(self.high), self.count))

    def summary(self) -> dict[str, float]:
        return {"policy_lag/min": int(self.low), "policy_lag/mean": self.total / self.count,
                "policy_lag/max": int(self.high)}


def _run_meta(config, settings: RunSettings, host: HostSettings, num_processes: int) -> dict:
    """What a resumed run must share with the checkpointed one (JSON-able)."""
    layout = dataclasses.asdict(host)
    for name in ("stall_timeout_s", "queue_size"):  # change how fast, not what is computed
        del layout[name]
    layout.update(actor_devices=len(host.actor_devices),
                  learner_devices=len(host.learner_devices))
    return {
        "config": {k: writers.jsonable(v) for k, v in dataclasses.asdict(config).items()},
        "seed": settings.seed, "host": layout, "num_processes": num_processes,
    }


def _restore(checkpointer, learner, init_key, run_meta: dict, workdir: str | None):
    """``((state, behaviour_params, actor_states), meta)`` of the latest checkpoint.

    Raises:
      ConfigError: no checkpoint, or one made with another config or layout.
    """
    latest = checkpointer.latest_step() if checkpointer else None
    if latest is None:
        raise errors.ConfigError(f"--resume: no checkpoint in {workdir}/checkpoints")
    meta = checkpointer.meta(latest)  # checked before any array is read
    for name, value in run_meta.items():
        saved = meta.get(name)
        if saved == value:
            continue
        if isinstance(value, dict) and isinstance(saved, dict):
            diff = ", ".join(f"{k}={saved.get(k)!r} (now {value.get(k)!r})"
                             for k in sorted(value.keys() | saved.keys())
                             if saved.get(k) != value.get(k))
            raise errors.ConfigError(
                f"--resume: the checkpoint in {workdir} was made with {name} {diff}"
            )
        raise errors.ConfigError(
            f"--resume: the checkpoint in {workdir} was made with {name}={saved!r} "
            f"(now {value!r})"
        )
    abstract = training_lib.abstract_state(learner, init_key)
    try:
        state, behaviour, actors, meta = host_checkpoint.restore(
            checkpointer, latest, abstract, abstract.params
        )
    except (ValueError, KeyError) as e:
        raise errors.ConfigError(
            f"--resume: the checkpoint in {workdir} does not fit this run: {e}"
        ) from None
    return (state, behaviour, actors), meta


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


def train_host(
    config: common.OnDeviceConfig,
    settings: RunSettings,
    host: HostSettings,
    workdir: str | None = None,
    progress: Callable[[str], None] = print,
    make_env: Callable | None = None,
) -> dict[str, Any]:
    """Trains ``config.agent`` on ``config.env`` (``gymnasium:<id>``) with host actors.

    Args:
      config: the agent's config; ``num_envs`` is replaced by the actor layout's.
      settings: seed, evaluation, logging and checkpoint settings (``num_seeds`` must
        be 1; ``checkpoint_every`` and ``resume`` as in ``training.train``).
      host: the actor/learner layout.
      workdir: where metrics.jsonl, config.json, checkpoint/ and the plot go.
      progress: receives one-line progress messages.
      make_env: ``(ActorSettings, seed) -> VectorEnv``-like factory (tests).

    Returns:
      A summary dict as ``training.train``'s (``resumed_from`` included), plus
      ``actor_env_steps`` (all steps the actors took, counted from the run's start),
      ``env_faults`` and ``policy_lag/*`` (over the whole run).

    Raises:
      ConfigError: bad settings, or ``resume`` finds no checkpoint or one made with
        another config or actor layout (before anything compiles).
      ActorError: an actor thread failed or stalled (threads joined, checkpoint saved).
      KeyboardInterrupt: on Ctrl-C (threads joined, checkpoint saved).
    """
    t_start = time.time()
    if settings.num_seeds != 1:
        raise errors.ConfigError(
            f"--num_seeds must be 1 with host actors (--env={config.env}), got {settings.num_seeds}"
        )
    # Several processes: each runs the same layout on its own (local) devices; device
    # indices in ``host`` are local; the learner mesh spans every process's learners.
    num_processes, process = jax.process_count(), jax.process_index()
    if process != 0:
        progress = lambda s: None  # noqa: E731
    host = host.resolve(jax.local_device_count())
    config = host_config(config, host, num_processes).validate(
        len(host.learner_devices) * num_processes
    )
    spec = gymnasium_env.make_spec(config.env)
    mesh = parallel.process_mesh(host.learner_devices)
    learner = host_learner.HostLearner(config, mesh, spec)
    agent = learner.agent
    devices = jax.local_devices()
    actor_devices = [devices[i] for i in host.actor_devices]
    num_updates = config.num_updates
    log_every = max(1, num_updates // max(1, settings.log_points))
    if settings.checkpoint_every is not None and settings.checkpoint_every < 1:
        raise errors.ConfigError(
            f"--checkpoint_every must be >= 1 update, got {settings.checkpoint_every}"
        )
    every = checkpoint_period(num_updates, 1, settings.checkpoint_every, config.steps_per_update)

    def is_checkpoint(updates: int) -> bool:  # also a log point and an actor snapshot
        return 0 < updates <= num_updates and (updates % every == 0 or updates == num_updates)

    init_key, train_key = jax.random.split(jax.random.key(settings.seed))
    run_meta = _run_meta(config, settings, host, num_processes)
    checkpointer = checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints")) if (
        workdir) else None
    start_update, resumed, meta = 0, None, {}
    if settings.resume:
        resumed, meta = _restore(checkpointer, learner, init_key, run_meta, workdir)
        start_update = meta["updates"]
    history = read_history(workdir, start_update * config.steps_per_update) if (
        resumed) else []
    writer = writers.MetricsWriter(
        workdir, history if resumed else None,
        purge_step=start_update * config.steps_per_update + 1 if resumed else None,
        wandb_project=settings.wandb_project,
        config=dict(dataclasses.asdict(config), agent=config.agent, seed=settings.seed),
    ) if workdir and process == 0 else None
    if writer:
        writers.write_config(
            workdir, config, agent=config.agent, acting="host",
            **{k: v for k, v in dataclasses.asdict(settings).items()
               if k != "chunk_compile"},  # the on-device chunk's setting
            **{f"host_{k}": v for k, v in dataclasses.asdict(host).items()},
            backend=jax.default_backend(), num_processes=num_processes,
        )

    state = resumed[0] if resumed else learner.init(init_key)
    act_fn = agent.host_act_fn()
    finish_fn = jax.jit(agent.actor_batch) if agent.actor_batch is not None else None

    t_compile = time.time()
    transition = _transition_shapes(
        spec, act_fn, state.params, config.rollout_len, host.envs_per_thread
    )
    env_ids = np.arange(host.envs_per_thread, dtype=np.int32)
    sent = transition if finish_fn is None else jax.eval_shape(
        finish_fn, state.params, transition, env_ids
    )
    shapes = jax.tree.map(  # [T, B_thread * num_processes, ...]: one thread of each process
        lambda x: jax.ShapeDtypeStruct(
            (x.shape[0], x.shape[1] * num_processes, *x.shape[2:]), x.dtype,
            sharding=learner.traj_sharding,
        ),
        sent,
    )
    update = learner.compile_update(state, (shapes,) * host.num_threads, train_key)
    for device in actor_devices:  # compile (and cache) the actors' steps on each actor device
        on_device = lambda x, d=device: jax.device_put(x, d)
        params = on_device(_local(state.params))
        jax.block_until_ready(act_fn(
            params, on_device(np.zeros((host.envs_per_thread, *spec.obs_shape), np.float32)),
            on_device(jax.random.key(0)), on_device(env_ids),
        ))
        if finish_fn is not None:
            zeros = jax.tree.map(
                lambda x, put=on_device: put(np.zeros(x.shape, x.dtype)), transition
            )
            jax.block_until_ready(finish_fn(params, zeros, on_device(env_ids)))
    compile_s = time.time() - t_compile
    progress(
        f"compiled in {compile_s:.1f}s: {num_updates} updates of {config.steps_per_update} env "
        f"steps; {host.num_threads} actor thread(s) x {host.envs_per_thread} envs on device(s) "
        f"{list(host.actor_devices)}, learner on {list(host.learner_devices)}"
        + (f", resumed at update {start_update}" if resumed else "")
    )

    server = param_server_lib.ParamServer(keep=2)
    behaviour = state.params  # version max(u - 1, 0): what rollout u acts with (deterministic)
    if resumed:
        behaviour = resumed[1]
        server.publish(start_update - 1, _local(behaviour))
    server.publish(start_update, _local(state.params))
    stop = threading.Event()
    queues = [queue.Queue(maxsize=host.queue_size) for _ in range(host.num_threads)]
    actor_settings = host_actor.ActorSettings(
        config.env, host.envs_per_thread, config.rollout_len, host.vectorization,
        host.deterministic, settings.seed, host.param_refresh_steps,
    )
    starts = resumed[2][process * host.num_threads:(process + 1) * host.num_threads] if (
        resumed) else [None] * host.num_threads
    threads = [
        host_actor.ActorThread(  # global thread index: seeds, env ids, keys
            process * host.num_threads + k, actor_settings,
            actor_devices[k // host.actor_threads], act_fn, server, queues[k],
            _to_learner(learner.traj_sharding, num_processes), stop, make_env, finish_fn,
            snapshot_at=is_checkpoint if checkpointer else None, start=starts[k],
        )
        for k in range(host.num_threads)
    ]
    lags = _LagStats(*meta.get("policy_lag", ()))
    wall_offset = float(meta.get("wall_s", 0.0))
    last_saved = start_update if resumed else None
    finished = False
    all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
        [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
    )))
    good = (start_update, state.params)  # (update, params): last log point with finite values
    t_train = time.time()
    for thread in threads:
        thread.start()
    try:
        interval = _Interval()
        t_last_log, t_last_print = t_train, 0.0
        for u in range(start_update, num_updates):
            t0 = time.perf_counter()
            rollouts = [
                _get_rollout(queues[k], stop, threads, k, host.stall_timeout_s)
                for k in range(host.num_threads)
            ]
            t1 = time.perf_counter()
            previous = state.params
            state, metrics = update(state, tuple(r.traj for r in rollouts), train_key)
            server.publish(u + 1, _local(state.params))
            jax.block_until_ready(metrics)
            behaviour = previous if host.deterministic else state.params
            interval.timings["learner_queue_wait_s"] += t1 - t0
            interval.timings["update_s"] += time.perf_counter() - t1
            for r in rollouts:
                interval.add_rollout(r, u)
            interval.metrics.append(metrics)
            if (u + 1) % log_every and u + 1 < num_updates and not is_checkpoint(u + 1):
                continue
            now = time.time()
            interval.actor_env_steps = sum(t.env_steps for t in threads)
            interval.env_faults = sum(t.env_faults for t in threads)
            if num_processes > 1:
                _gather_interval(interval)
            record = _record(
                interval, (u + 1) * config.steps_per_update, wall_offset + now - t_start,
                now - t_last_log,
            )
            lags.add(interval.lags)
            _check_finite(interval, u + 1, bool(all_finite(state.params)), good[0])
            good = (u + 1, state.params)
            interval, t_last_log = _Interval(), now
            history.append(record)
            if writer:
                writer.write(record)
            if now - t_last_print >= settings.progress_every_s or u + 1 == num_updates:
                t_last_print = now
                progress(
                    f"env_steps {record['env_steps']:>10d} | sps {record['sps']:>9.0f} | "
                    f"return {record['train/episode_return']:8.2f} | lag "
                    f"{record['policy_lag/mean']:.2f} | wall {record['wall_s']:6.1f}s"
                )
            if checkpointer and is_checkpoint(u + 1):
                actor_states = [
                    _snapshot(threads, k, u + 1, stop, host.stall_timeout_s)
                    for k in range(host.num_threads)
                ]
                host_checkpoint.save(checkpointer, u + 1, state, behaviour, actor_states, dict(
                    run_meta, updates=u + 1, env_steps=(u + 1) * config.steps_per_update,
                    wall_s=wall_offset + time.time() - t_start, policy_lag=list(lags),
                ))
                last_saved = u + 1
        finished = True
    except KeyboardInterrupt:
        progress("interrupted: " + (
            f"last checkpoint: update {last_saved} in {checkpointer.directory} (--resume)"
            if last_saved else "no checkpoint was saved"))
        raise
    finally:
        stop.set()
        server.close()
        deadline = time.monotonic() + JOIN_TIMEOUT_S  # for all threads together
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if checkpointer:
            checkpointer.close()
        if not finished and writer:
            # The last finished update's parameters (after a non-finite value: those of
            # the last log point where everything was finite): loadable and good. Saved
            # by the primary alone (a failing run's peers may never reach a save).
            bad = isinstance(sys.exc_info()[1], errors.NonFiniteError)
            checkpoint.save_params(
                os.path.join(workdir, "checkpoint"),
                jax.device_get(_local(good[1] if bad else state.params)), this_process_only=True,
            )
            writer.close()
    train_s = time.time() - t_train
    env_steps = num_updates * config.steps_per_update
    run_steps = env_steps - start_update * config.steps_per_update

    params = jax.device_get(_local(state.params))
    sha = checkpoint.params_sha256(params)
    actor_totals = np.array([sum(t.env_steps for t in threads),
                             sum(t.env_faults for t in threads)], np.int64)
    if num_processes > 1:
        from jax.experimental import multihost_utils

        distributed.check_same_everywhere(sha, "params_sha256")
        actor_totals = np.asarray(multihost_utils.process_allgather(actor_totals)).sum(axis=0)
    eval_returns = evaluation.evaluate_on_host(
        config.env, agent.policy, agent.dist.mode, params,
        settings.eval_episodes, settings.seed + 2**30, spec.max_episode_steps,
    )
    summary = {
        "env_steps": env_steps,
        "actor_env_steps": int(actor_totals[0]),
        "wall_s": wall_offset + time.time() - t_start,
        "compile_s": compile_s,
        "train_s": train_s,
        "sps": run_steps / train_s if run_steps else float("nan"),
        "eval/episode_return": float(eval_returns.mean()),
        "eval/episode_return_per_seed": eval_returns.mean(keepdims=True),
        "eval/episode_return_std_over_seeds": 0.0,
        "env_faults": int(actor_totals[1]),
        **lags.summary(),
        "params_sha256": sha,
    }
    progress(
        f"done: {env_steps} env steps in {train_s:.1f}s ({summary['sps']:.0f} sps) + "
        f"{compile_s:.1f}s compile | policy lag mean {summary['policy_lag/mean']:.2f} | "
        f"env faults {summary['env_faults']} | greedy eval return "
        f"{summary['eval/episode_return']:.1f}"
    )
    if workdir:  # every process joins the save of the (global) parameters
        checkpoint.save_params(os.path.join(workdir, "checkpoint"), state.params)
    if writer:
        writer.write(summary)
        writer.close()
        steps = np.array([h["env_steps"] for h in history])
        curve = np.array([[h["train/episode_return"]] for h in history], dtype=np.float64)
        title = f"{AGENTS[config.agent].title} on {config.env} (host actors)"
        writers.plot_learning_curve(workdir, steps, curve, title)
    return dict(summary, **{"eval/returns": eval_returns[None], "params": params,
                            "history": history, "state": state, "resumed_from": start_update})


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


def _gather_interval(interval: _Interval) -> None:
    """Makes ``interval``'s episode counts, env steps and policy lags those of every
    process (a collective: every process calls it at the same log point; each has as
    many threads and updates, so as many lags). Timings stay this process's."""
    from jax.experimental import multihost_utils

    sums = np.array([*interval.episodes, interval.env_steps, interval.actor_env_steps,
                     interval.env_faults], np.float64)
    sums, lags = multihost_utils.process_allgather(
        (sums, np.asarray(interval.lags, np.int64))
    )
    total = np.asarray(sums).sum(axis=0)
    interval.episodes = [float(total[0]), float(total[1]), int(total[2])]
    interval.env_steps, interval.actor_env_steps, interval.env_faults = map(int, total[3:6])
    interval.lags = [int(v) for v in np.asarray(lags).reshape(-1)]


def _check_finite(interval: _Interval, done_updates: int, params_finite: bool,
                  good_update: int) -> None:
    """Raises NonFiniteError naming the first update of ``interval`` with a NaN/inf metric."""
    first = done_updates - len(interval.metrics) + 1
    for i, metrics in enumerate(jax.device_get(interval.metrics)):
        names = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
        if names:
            raise errors.NonFiniteError(
                f"non-finite {', '.join(names)} at update {first + i}; stopped, parameters of "
                f"update {good_update} (the last finite ones) saved in checkpoint/"
            )
    if not params_finite:
        raise errors.NonFiniteError(
            f"non-finite parameters after update {done_updates}; stopped, parameters of "
            f"update {good_update} (the last finite ones) saved in checkpoint/"
        )


def _record(interval: _Interval, env_steps: int, wall_s: float, dt: float) -> dict:
    host_metrics = jax.device_get(interval.metrics)
    returns, lengths, count = interval.episodes
    record = {
        "env_steps": env_steps,
        "actor_env_steps": interval.actor_env_steps,
        "wall_s": wall_s,
        "sps": interval.env_steps / dt,
        "train/episode_return": returns / count if count else float("nan"),
        "train/episode_length": lengths / count if count else float("nan"),
        "train/episodes": count,
        "policy_lag/min": int(min(interval.lags)),
        "policy_lag/mean": float(np.mean(interval.lags)),
        "policy_lag/max": int(max(interval.lags)),
        "env_faults": interval.env_faults,
        **{f"time/{k}": v for k, v in interval.timings.items()},
    }
    for name in host_metrics[0]:
        record[name] = float(np.mean([m[name] for m in host_metrics]))
    return record
