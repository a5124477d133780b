"""The host loop: runs compiled chunks of updates, logs, evaluates and saves.

No maths lives here. Each host call runs ``chunk`` updates in one compiled
program; the next chunk is dispatched before the previous chunk's (already
reduced, scalar) metrics are fetched, so the device never waits for the host.
"""

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxrl_dist import agents, checkpoint, evaluation, parallel, writers
from jaxrl_dist.agents import common, on_device


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Settings of a run that are not hyperparameters of the agent."""

    seed: int = 0
    num_seeds: int = 1
    num_devices: int | None = None  # None: every local device
    eval_episodes: int = 32
    log_points: int = 20  # at least this many metrics.jsonl lines (when there are enough updates)
    progress_every_s: float = 2.0


def chunk_size(num_updates: int, log_points: int) -> int:
    """Largest divisor of ``num_updates`` that still gives >= ``log_points`` chunks."""
    target = max(1, num_updates // max(1, log_points))
    return max(d for d in range(1, target + 1) if num_updates % d == 0)


def _per_episode(metrics: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``[S]`` mean of ``name`` over the finished episodes (NaN where none finished)."""
    with np.errstate(all="ignore"):
        return np.where(metrics["episodes"] > 0, metrics[name] / metrics["episodes"], np.nan)


def train(
    config: common.OnDeviceConfig,
    settings: RunSettings,
    workdir: str | None = None,
    progress: Callable[[str], None] = print,
    env_params: Any = None,
) -> dict[str, Any]:
    """Trains ``config.agent``; with a ``workdir``, writes metrics, config, checkpoint and plot.

    Returns:
      A summary dict: ``env_steps`` (per seed), ``compile_s``, ``train_s``, ``sps``
      (env steps per second over all seeds, after compilation),
      ``eval/episode_return`` (mean over seeds and episodes), ``eval/returns``
      (``[S, eval_episodes]``), ``params_sha256``, ``params`` and ``history``.

    Raises:
      ConfigError: the config or settings are invalid (before anything compiles).
    """
    t_start = time.time()
    mesh = parallel.make_mesh(settings.num_devices)
    learner = agents.make_learner(config, mesh, settings.num_seeds, env_params)
    num_updates = config.num_updates
    chunk = chunk_size(num_updates, settings.log_points)
    steps_per_chunk = chunk * config.steps_per_update
    writer = writers.MetricsWriter(workdir) if workdir else None
    if workdir:
        writers.write_config(
            workdir, config, agent=config.agent, **dataclasses.asdict(settings),
            num_devices_used=mesh.size, backend=jax.default_backend(),
        )

    init_keys, train_keys = learner.seed_keys(settings.seed)
    state = learner.init(init_keys)
    t_compile = time.time()
    train_chunk = learner.make_train_chunk(chunk).lower(state, train_keys).compile()
    compile_s = time.time() - t_compile
    progress(
        f"compiled in {compile_s:.1f}s: {num_updates} updates of {config.steps_per_update} "
        f"env steps in chunks of {chunk}, {settings.num_seeds} seed(s), {mesh.size} device(s)"
    )

    history = []
    t_train = time.time()
    t_last_log, steps_last_log, t_last_print = t_train, 0, 0.0
    pending = None
    for i in range(num_updates // chunk + 1):
        if i < num_updates // chunk:
            state, metrics = train_chunk(state, train_keys)
        else:
            metrics = None
        if pending is not None:
            done_steps, done_metrics = pending
            host = jax.device_get(done_metrics)
            now = time.time()
            returns = _per_episode(host, "episode_return_sum")
            lengths = _per_episode(host, "episode_length_sum")
            sps = (done_steps - steps_last_log) * settings.num_seeds / (now - t_last_log)
            t_last_log, steps_last_log = now, done_steps
            record = {
                "env_steps": done_steps,
                "wall_s": now - t_start,
                "sps": sps,
                "train/episode_return": float(np.nanmean(returns)) if np.any(returns == returns)
                else float("nan"),
                "train/episode_return_per_seed": returns,
                "train/episode_length": float(np.nanmean(lengths)) if np.any(lengths == lengths)
                else float("nan"),
                **{k: float(np.mean(v)) for k, v in host.items()
                   if k not in on_device.SUM_METRICS},
            }
            history.append(record)
            if writer:
                writer.write(record)
            if now - t_last_print >= settings.progress_every_s or metrics is None:
                t_last_print = now
                progress(
                    f"env_steps {done_steps:>10d} | sps {sps:>9.0f} | "
                    f"return {record['train/episode_return']:8.2f} | wall {now - t_start:6.1f}s"
                )
        if metrics is not None:
            pending = ((i + 1) * steps_per_chunk, metrics)
    jax.block_until_ready(state)
    train_s = time.time() - t_train
    env_steps = num_updates * config.steps_per_update

    evaluate = evaluation.make_evaluator(
        learner.env, learner.policy, learner.dist.mode, settings.eval_episodes
    )
    eval_returns = np.asarray(
        evaluate(state.params, jax.random.fold_in(jax.random.key(settings.seed), 2**31 - 1))
    )
    params = jax.device_get(state.params)
    sha = checkpoint.params_sha256(params)
    summary = {
        "env_steps": env_steps,
        "wall_s": time.time() - t_start,
        "compile_s": compile_s,
        "train_s": train_s,
        "sps": env_steps * settings.num_seeds / train_s,
        "eval/episode_return": float(eval_returns.mean()),
        "eval/episode_return_per_seed": eval_returns.mean(axis=1),
        "eval/episode_return_std_over_seeds": float(eval_returns.mean(axis=1).std()),
        "params_sha256": sha,
    }
    progress(
        f"done: {env_steps} env steps/seed in {train_s:.1f}s ({summary['sps']:.0f} sps) "
        f"+ {compile_s:.1f}s compile | greedy eval return "
        f"{summary['eval/episode_return']:.1f} (per seed: "
        f"{', '.join(f'{r:.1f}' for r in summary['eval/episode_return_per_seed'])})"
    )
    if writer:
        writer.write(summary)
        writer.close()
        checkpoint.save_params(os.path.join(workdir, "checkpoint"), params)
        steps = np.array([h["env_steps"] for h in history])
        curve = np.stack([np.asarray(h["train/episode_return_per_seed"]) for h in history])
        title = f"{agents.AGENTS[config.agent].title} on {config.env}"
        writers.plot_learning_curve(workdir, steps, curve, title)
    return dict(summary, **{"eval/returns": eval_returns, "params": params, "history": history})
