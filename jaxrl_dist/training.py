"""The host loop: runs compiled chunks of updates, logs, evaluates and saves.

No maths lives here. Each host call runs ``chunk`` updates in one compiled
program; the next chunk is dispatched before the previous chunk's (already
reduced, scalar) metrics are fetched, so the device never waits for the host,
except at checkpoints: there the chunk's metrics and parameters are checked to
be finite before its state is saved, so a saved checkpoint is always a good one.

In a multi-process run (``jax.distributed``) every process runs this loop on its
own devices; only process 0 writes metrics, the config, the plot and progress
lines; every process takes part in checkpoint saves.
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxrl_dist import (
    agents,
    checkpoint,
    compile_options,
    cpu_threads,
    distributed,
    errors,
    evaluation,
    parallel,
    writers,
)
from jaxrl_dist.agents import common, on_device


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of a run that are not hyperparameters of the agent.

    ``checkpoint_every``: updates between whole-run checkpoints in
    ``<workdir>/checkpoints/`` (``None``: about every tenth of the run, but at least
    ``MIN_DEFAULT_CHECKPOINT_STEPS`` = 5e5 env steps apart); one is also written at the
    end and when the run is interrupted. ``resume``:
    continue from the latest checkpoint in the workdir.
    """

    seed: int = 0
    num_seeds: int = 1
    num_devices: int | None = None  # None: every device (of every process)
    eval_episodes: int = 32
    log_points: int = 20  # at least this many metrics.jsonl lines (when there are enough updates)
    progress_every_s: float = 2.0
    checkpoint_every: int | None = None
    resume: bool = False
    wandb_project: str | None = None  # also log to Weights & Biases (process 0 only)
    chunk_compile: str = "auto"  # compile_options.CHUNK_TIERS: quick, optimized, or by run size


# Settings that change what a run computes: a resumed run must match them.
RESULT_SETTINGS = ("seed", "num_seeds", "num_devices_used")


def chunk_size(num_updates: int, log_points: int, divides: tuple[int, ...] = ()) -> int:
    """Largest divisor of ``num_updates`` (and of every ``divides``) giving >= ``log_points``
    chunks."""
    target = max(1, num_updates // max(1, log_points))
    return max(
        d for d in range(1, target + 1)
        if num_updates % d == 0 and all(n % d == 0 for n in divides)
    )


# Default checkpoints are at least this many env steps (per seed) apart. Each save blocks
# the host loop: the default PPO CartPole run (5e5 steps, ~4.5 s of training on the 2-core
# CPU VM) spent ~0.4 s in its 9 intermediate saves (2026-12-01). 5e5 steps are a few
# seconds of training on a CPU, which is all a crash can then lose.
MIN_DEFAULT_CHECKPOINT_STEPS = 500_000


def checkpoint_period(
    num_updates: int, chunk: int, checkpoint_every: int | None, steps_per_update: int = 1
) -> int:
    """Updates between checkpoints: ``checkpoint_every``, or about a tenth of the run but
    at least ``MIN_DEFAULT_CHECKPOINT_STEPS`` env steps (``steps_per_update`` per update);
    a multiple of ``chunk``. A period past ``num_updates`` leaves the final checkpoint only.
    """
    if checkpoint_every is not None:
        return checkpoint_every
    tenth = math.ceil(num_updates / 10 / chunk)
    floor = math.ceil(MIN_DEFAULT_CHECKPOINT_STEPS / max(1, steps_per_update) / chunk)
    return chunk * max(1, tenth, floor)


def _per_episode(metrics: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``[S]`` mean of ``name`` over the finished episodes (NaN where none finished)."""
    with np.errstate(all="ignore"):
        return np.where(metrics["episodes"] > 0, metrics[name] / metrics["episodes"], np.nan)


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(x == x) else float("nan")


def _check_finite(host: dict[str, np.ndarray], done_updates: int, where: str) -> None:
    """Raises NonFiniteError naming the first update and the metrics that went non-finite."""
    bad_update = np.asarray(host[on_device.NONFINITE_UPDATE])
    params_ok = np.asarray(host[on_device.PARAMS_FINITE])
    if np.all(bad_update < 0) and np.all(params_ok):
        return
    names = sorted(
        k for k, v in host.items()
        if k not in on_device.GUARD_METRICS and not np.all(np.isfinite(np.asarray(v)))
    )
    if np.any(bad_update >= 0):
        update = int(np.min(bad_update[bad_update >= 0]))
        seeds = np.flatnonzero(bad_update >= 0).tolist()
        raise errors.NonFiniteError(
            f"non-finite {', '.join(names) or 'metric'} at update {update} (seed(s) {seeds}); "
            f"stopped, {where}"
        )
    seeds = np.flatnonzero(~params_ok).tolist()
    raise errors.NonFiniteError(
        f"non-finite parameters after update {done_updates} (seed(s) {seeds}); stopped, {where}"
    )


def abstract_state(learner, init_keys) -> Any:
    """The train state's shapes and dtypes with its shardings (to restore into).

    ``learner``: anything with ``init(init_keys)`` and ``state_shardings`` (a prefix
    tree of ``NamedSharding``): an on-device learner or a ``HostLearner``.
    """
    shapes = jax.eval_shape(learner.init, init_keys)
    return jax.tree.map(
        lambda sharding, sub: jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), sub
        ),
        learner.state_shardings, shapes,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )


def read_history(workdir: str, max_env_steps: int) -> list[dict[str, Any]]:
    """The log records of ``<workdir>/metrics.jsonl`` up to ``max_env_steps`` (per seed)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    history = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                break
            if "params_sha256" in record or record.get("env_steps", 0) > max_env_steps:
                break
            history.append(record)
    return history


def train(
    config: common.OnDeviceConfig,
    settings: RunSettings,
    workdir: str | None = None,
    progress: Callable[[str], None] = print,
    env_params: Any = None,
) -> dict[str, Any]:
    """Trains ``config.agent``; with a ``workdir``, writes metrics, config, checkpoints and plot.

    Returns:
      A summary dict: ``env_steps`` (per seed), ``init_s`` (seconds to build the
      per-seed keys and the initial state, compile included, or to restore it from a
      checkpoint), ``compile_s`` (of the training chunk), ``chunk_tier`` (the
      tier it compiled in, ``compile_options.chunk_tier``), ``train_s``, ``sps``
      (env steps per second over all seeds, after compilation, of this
      invocation), ``eval/episode_return`` (mean over seeds and episodes),
      ``eval/returns`` (``[S, eval_episodes]``), ``params_sha256``, ``params``,
      ``history`` and ``resumed_from`` (updates restored from a checkpoint, 0).

    Raises:
      ConfigError: the config or settings are invalid, or ``settings.resume``
        finds no checkpoint, one made with another config (before compiling) or one
        whose chunk compiled in another tier than an explicit ``chunk_compile``.
      NonFiniteError: a loss, metric or parameter became NaN/inf; the last
        checkpoint (written before the bad update) is kept.
      KeyboardInterrupt: after saving a checkpoint of the last finished chunk.
    """
    t_start = time.time()
    primary = distributed.is_primary()
    if not primary:
        progress = lambda s: None  # noqa: E731
    mesh = parallel.make_mesh(settings.num_devices)
    learner = agents.make_learner(config, mesh, settings.num_seeds, env_params)
    num_updates = config.num_updates
    run_env_steps = num_updates * config.steps_per_update * settings.num_seeds
    compile_options.chunk_tier(settings.chunk_compile, run_env_steps)  # checks the name
    if settings.checkpoint_every is not None and settings.checkpoint_every < 1:
        raise errors.ConfigError(
            f"--checkpoint_every must be >= 1 update, got {settings.checkpoint_every}"
        )
    run_meta = {
        "config": {k: writers.jsonable(v) for k, v in dataclasses.asdict(config).items()},
        "seed": settings.seed, "num_seeds": settings.num_seeds, "num_devices_used": mesh.size,
    }
    t_init = time.time()
    init_keys, train_keys = learner.seed_keys(settings.seed)
    init_s = time.time() - t_init
    checkpointer = checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints")) if (
        workdir) else None
    start_update, state, meta = 0, None, {}
    if settings.resume:
        latest = checkpointer.latest_step() if checkpointer else None
        if latest is None:
            raise errors.ConfigError(f"--resume: no checkpoint in {workdir}/checkpoints")
        t_restore = time.time()
        state, meta = checkpointer.restore(latest, abstract_state(learner, init_keys))
        init_s += time.time() - t_restore
        for name, value in run_meta.items():
            if meta.get(name) != value:
                raise errors.ConfigError(
                    f"--resume: the checkpoint in {workdir} was made with a different {name} "
                    f"({meta.get(name)!r}, now {value!r})"
                )
        start_update = latest
    # A resumed run compiles its chunk as it started: auto takes the checkpoint's tier.
    tier = compile_options.run_tier(
        settings.chunk_compile, meta.get("chunk_tier"), run_env_steps, learner.platform
    )
    chunk = chunk_size(
        num_updates, settings.log_points,
        tuple(n for n in (settings.checkpoint_every, start_update) if n),
    )
    every = checkpoint_period(
        num_updates, chunk, settings.checkpoint_every, config.steps_per_update
    )
    history = read_history(workdir, start_update * config.steps_per_update) if (
        workdir and settings.resume) else []
    writer = None
    if workdir and primary:
        writer = writers.MetricsWriter(
            workdir, history if settings.resume else None,
            purge_step=start_update * config.steps_per_update + 1 if settings.resume else None,
            wandb_project=settings.wandb_project,
            config=dict(dataclasses.asdict(config), agent=config.agent, seed=settings.seed),
        )
        writers.write_config(
            workdir, config, agent=config.agent, **dataclasses.asdict(settings),
            num_devices_used=mesh.size, num_processes=distributed.process_count(),
            backend=jax.default_backend(), cpu_threads=cpu_threads.configured(),
            chunk_tier=tier,
        )

    if state is None:
        t_init = time.time()
        state = jax.block_until_ready(learner.init(init_keys))
        init_s += time.time() - t_init
    t_compile = time.time()
    train_chunk = learner.make_train_chunk(chunk, quick=tier == "quick").lower(
        state, train_keys).compile()
    compile_s = time.time() - t_compile
    progress(
        f"compiled ({tier}) in {compile_s:.1f}s: {num_updates} updates of "
        f"{config.steps_per_update} env steps in chunks of {chunk}, {settings.num_seeds} "
        f"seed(s), {mesh.size} device(s)"
        + (f", resumed at update {start_update}" if start_update else "")
    )

    wall_offset = float(meta.get("wall_s", 0.0))
    t_train = time.time()
    log = {"t": t_train, "steps": start_update * config.steps_per_update, "printed": 0.0,
           "recorded": start_update}
    last_saved = start_update if settings.resume else None

    def where() -> str:
        if last_saved is None or checkpointer is None:
            return "no checkpoint was saved"
        return f"last good checkpoint: update {last_saved} in {checkpointer.directory}"

    def record_chunk(done_updates: int, metrics: dict, final: bool) -> None:
        if done_updates <= log["recorded"]:
            return  # written already (a Ctrl-C can land after the write, before the caller
            # forgets the chunk; the handler then offers it again)
        host = jax.device_get(metrics)
        done_steps = done_updates * config.steps_per_update
        now = time.time()
        returns = _per_episode(host, "episode_return_sum")
        sps = (done_steps - log["steps"]) * settings.num_seeds / max(now - log["t"], 1e-9)
        log.update(t=now, steps=done_steps)
        record = {
            "env_steps": done_steps,
            "wall_s": wall_offset + now - t_start,
            "sps": sps,
            "train/episode_return": _nanmean(returns),
            "train/episode_return_per_seed": returns,
            "train/episode_length": _nanmean(_per_episode(host, "episode_length_sum")),
            **{k: float(np.mean(v)) for k, v in host.items()
               if k not in on_device.SUM_METRICS and k not in on_device.GUARD_METRICS},
        }
        history.append(record)
        if writer:
            writer.write(record)
        log["recorded"] = done_updates
        if now - log["printed"] >= settings.progress_every_s or final:
            log["printed"] = now
            progress(
                f"env_steps {done_steps:>10d} | sps {sps:>9.0f} | "
                f"return {record['train/episode_return']:8.2f} | wall {record['wall_s']:6.1f}s"
            )
        _check_finite(host, done_updates, where())

    def save(done_updates: int) -> None:
        nonlocal last_saved
        if checkpointer is None:
            return
        checkpointer.save(done_updates, state, dict(
            run_meta, updates=done_updates, env_steps=done_updates * config.steps_per_update,
            chunk_tier=tier,
            wall_s=wall_offset + time.time() - t_start,
        ))
        last_saved = done_updates

    # Chunks dispatched but not yet recorded, oldest first: chunk i's metrics are fetched
    # (which blocks) only after chunk i + 1 is dispatched, so the two overlap. ``state``
    # always holds the newest chunk's result, ``state_updates`` of them.
    unrecorded: list[tuple[int, dict]] = []
    state_updates = start_update
    try:
        for i in range(start_update // chunk, num_updates // chunk):
            state, metrics = train_chunk(state, train_keys)
            state_updates = (i + 1) * chunk
            unrecorded.append((state_updates, metrics))
            if len(unrecorded) > 1:  # the previous chunk's (at most one waits)
                record_chunk(*unrecorded[0], final=False)
                unrecorded.pop(0)
            if state_updates % every == 0 or state_updates == num_updates:
                record_chunk(*unrecorded[0], final=state_updates == num_updates)
                unrecorded.pop(0)
                save(state_updates)
    except KeyboardInterrupt:
        # Every dispatched chunk is complete once fetched: record them in order (each
        # checks its metrics are finite), then keep the newest state under ITS update
        # count (a Ctrl-C usually lands while chunk i's metrics are fetched, when
        # ``state`` already holds chunk i + 1).
        for done, metrics in unrecorded:
            record_chunk(done, metrics, final=done == state_updates)
        if state_updates > start_update and state_updates != last_saved:
            save(state_updates)
        progress(f"interrupted: {where()}")
        raise
    jax.block_until_ready(state)
    train_s = time.time() - t_train
    env_steps = num_updates * config.steps_per_update

    evaluate = evaluation.make_evaluator(
        learner.env, learner.policy, learner.dist.mode, settings.eval_episodes
    )
    eval_returns = np.asarray(jax.device_get(
        evaluate(state.params, jax.random.fold_in(jax.random.key(settings.seed), 2**31 - 1))
    ))
    params = jax.device_get(state.params)
    sha = checkpoint.params_sha256(params)
    run_steps = env_steps - start_update * config.steps_per_update
    summary = {
        "env_steps": env_steps,
        "wall_s": wall_offset + time.time() - t_start,
        "init_s": init_s,
        "compile_s": compile_s,
        "chunk_tier": tier,
        "train_s": train_s,
        "sps": run_steps * settings.num_seeds / train_s if run_steps else float("nan"),
        "eval/episode_return": float(eval_returns.mean()),
        "eval/episode_return_per_seed": eval_returns.mean(axis=1),
        "eval/episode_return_std_over_seeds": float(eval_returns.mean(axis=1).std()),
        "params_sha256": sha,
    }
    progress(
        f"done: {env_steps} env steps/seed in {train_s:.1f}s ({summary['sps']:.0f} sps) "
        f"+ {compile_s:.1f}s compile ({tier}) + {init_s:.1f}s initial state | greedy eval return "
        f"{summary['eval/episode_return']:.1f} (per seed: "
        f"{', '.join(f'{r:.1f}' for r in summary['eval/episode_return_per_seed'])})"
    )
    if workdir:
        checkpoint.save_params(os.path.join(workdir, "checkpoint"), state.params)
    if checkpointer:
        checkpointer.close()
    if writer:
        writer.write(summary)
        writer.close()
        steps = np.array([h["env_steps"] for h in history])
        curve = np.array([
            [np.nan if r is None else r for r in h["train/episode_return_per_seed"]]
            for h in history
        ], dtype=np.float64)
        title = f"{agents.AGENTS[config.agent].title} on {config.env}"
        writers.plot_learning_curve(workdir, steps, curve, title)
    return dict(summary, **{
        "eval/returns": eval_returns, "params": params, "history": history,
        "resumed_from": start_update,
    })
