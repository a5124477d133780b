"""On-device ("Anakin") runs: gymnax envs stepped inside the compiled training chunk.

``train`` builds an ``OnDevicePath`` and hands it to the run shell
(``run/shell.py``), which owns everything a run does besides acting and
learning. Each host call runs ``chunk`` updates in one compiled program; the next
chunk is dispatched before the previous chunk's (already reduced, scalar)
metrics are fetched, so the device never waits for the host, except at
checkpoints and greedy evaluations during training (``RunSettings.eval_every``):
there the chunk's log point is made before the next chunk is dispatched, so its
metrics and parameters are checked to be finite before its state is saved (a saved
checkpoint is always a good one), and the evaluation sees exactly its parameters.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxrl_dist import agents, distributed, errors, parallel
from jaxrl_dist.agents import base, common
from jaxrl_dist.anakin import on_device
from jaxrl_dist.envs import episodes as evaluation
from jaxrl_dist.run import files, memory, shell, writers
from jaxrl_dist.run.progress import ProgressFn
from jaxrl_dist.run.settings import (  # noqa: F401 - the run's settings, re-exported
    MIN_DEFAULT_CHECKPOINT_STEPS,
    RunSettings,
    checkpoint_period,
    chunk_size,
)


def train(
    config: common.OnDeviceConfig,
    settings: RunSettings,
    workdir: str | None = None,
    log: Callable[[str], None] = print,
    progress_fn: ProgressFn | None = None,
    env_params: Any = None,
    tuning_=None,
) -> dict[str, Any]:
    """Trains ``config.agent`` on the gymnax env ``config.env``, data-parallel on the mesh.

    Args:
      config: the agent's config.
      settings: the run's settings (seeds, devices, evaluation, logging, checkpoints).
      workdir: where the run's files go (``None``: nothing is written).
      log: receives one-line messages.
      progress_fn: ``(env_steps, metrics)`` at every log point (default: a console line).
      env_params: optional gymnax ``EnvParams`` override.
      tuning_: how programs are built (default: for the mesh's platform).

    Returns:
      ``shell.run``'s summary, with ``init_s`` (seconds to build the per-seed keys and
      the initial state, compile included, or to restore it), ``compile_s`` (of the
      training chunk) and ``chunk_tier`` (the tier it compiled in: quick or
      optimized on CPU, default elsewhere).

    Raises:
      ConfigError: the config or settings are invalid, or ``settings.resume`` finds
        no checkpoint or one made with another config (before compiling).
      NonFiniteError: a loss, metric or parameter became NaN/inf; the last
        checkpoint (written before the bad update) is kept.
      KeyboardInterrupt: after saving a checkpoint of the last finished chunk.
    """
    path = OnDevicePath(config, settings, log, env_params, tuning_)
    return shell.run(path, settings, workdir, log, progress_fn)


def _per_episode(metrics: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``[S]`` mean of ``name`` over the finished episodes (NaN where none finished)."""
    with np.errstate(all="ignore"):
        return np.where(metrics["episodes"] > 0, metrics[name] / metrics["episodes"], np.nan)


def _guard_only(name: str) -> bool:
    """Metric ``name`` is for the finite guard, not for metrics.jsonl."""
    return name in on_device.GUARD_METRICS or base.is_nonfinite_flag(name)


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(x == x) else float("nan")


class OnDevicePath:
    """The on-device acting path of ``shell.run`` (``shell.ActingPath``).

    Raises:
      ConfigError: the config or ``settings.chunk_compile`` is invalid.
    """

    saves_on_interrupt = True

    def __init__(self, config, settings: RunSettings, log, env_params=None, tuning_=None):
        self.settings, self.log = settings, log
        self.mesh = parallel.make_mesh(settings.num_devices)
        self.learner = on_device.OnDeviceLearner(
            config, self.mesh, settings.num_seeds, env_params, tuning_
        )
        self.config = config = self.learner.config
        self.num_seeds = settings.num_seeds
        self.num_updates, self.steps_per_update = config.num_updates, config.steps_per_update
        self.primary = distributed.is_primary()
        self.title = f"{agents.AGENTS[config.agent].title} on {config.env}"
        self.tier = self.learner.tuning.chunk_tier(
            settings.chunk_compile, self.num_updates * self.steps_per_update * self.num_seeds
        )
        self.identity = {
            "config": {k: writers.jsonable(v) for k, v in dataclasses.asdict(config).items()},
            "seed": settings.seed, "num_seeds": settings.num_seeds,
            "num_devices_used": self.mesh.size,
        }
        t0 = time.time()
        self.init_keys, self.train_keys = self.learner.seed_keys(settings.seed)
        self.init_s = time.time() - t0
        self.state = None
        self.newest_updates = 0
        self._unrecorded: list[tuple[int, Any]] = []
        self._evaluator = None  # compiled on the first evaluation, then reused

    def config_record(self) -> dict[str, Any]:
        record = dict(
            dataclasses.asdict(self.settings), num_devices_used=self.mesh.size,
            num_processes=distributed.process_count(), backend=jax.default_backend(),
            chunk_tier=self.tier,
        )
        if self.learner.tuning.cpu:
            from jaxrl_dist.cpu import threads

            record["cpu_threads"] = threads.configured()
        return record

    def memory_parts(self) -> tuple[list[memory.Part], Any, dict[str, Any]]:
        abstract = files.abstract_state(
            self.learner.init, (self.init_keys,), self.learner.state_shardings
        )
        steps = self.steps_per_update * self.num_seeds // self.mesh.size
        parts = memory.run_parts(self.config, abstract, self.learner.agent.spec.obs_shape,
                                 steps)
        return parts, self.mesh.devices.flat[0], memory.flag_values(self.config,
                                                                     self.num_seeds)

    def restore(self, checkpointer, step: int) -> None:
        t0 = time.time()
        abstract = files.abstract_state(
            self.learner.init, (self.init_keys,), self.learner.state_shardings
        )
        try:
            self.state, _ = checkpointer.restore(step, abstract)
        except (ValueError, KeyError) as e:
            raise errors.ConfigError(
                f"--resume: the checkpoint in {checkpointer.directory} does not fit this "
                f"run: {e}"
            ) from None
        self.newest_updates = step
        self.init_s += time.time() - t0

    def chunk(self, start_update: int) -> int:
        divides = tuple(n for n in (self.settings.checkpoint_every, start_update) if n)
        self._chunk = chunk_size(self.num_updates, self.settings.log_points, divides)
        return self._chunk

    def prepare(self, start_update: int, every: int, saving: bool) -> dict[str, Any]:
        del every, saving
        if self.state is None:
            t0 = time.time()
            self.state = jax.block_until_ready(self.learner.init(self.init_keys))
            self.init_s += time.time() - t0
        t0 = time.time()
        self.train_chunk = self.learner.make_train_chunk(self._chunk, self.tier).lower(
            self.state, self.train_keys).compile()
        compile_s = time.time() - t0
        self.log(
            f"compiled ({self.tier}) in {compile_s:.1f}s: {self.num_updates} updates of "
            f"{self.steps_per_update} env steps in chunks of {self._chunk}, {self.num_seeds} "
            f"seed(s), {self.mesh.size} device(s)"
            + (f", resumed at update {start_update}" if start_update else "")
        )
        self._last = (time.time(), start_update * self.steps_per_update)
        return {"init_s": self.init_s, "compile_s": compile_s, "chunk_tier": self.tier}

    def log_points(self, start_update: int, every: int) -> Iterator[shell.LogPoint]:
        """Chunk ``i``'s metrics are fetched (which blocks) only after chunk ``i + 1`` is
        dispatched, so the two overlap; ``state`` always holds the newest chunk's result.
        A chunk ending at a checkpoint or at a greedy evaluation
        (``RunSettings.eval_due``) is yielded before the next one is dispatched, so
        ``state`` is then that log point's."""
        chunk, spu, settings = self._chunk, self.steps_per_update, self.settings
        self._last = (time.time(), start_update * self.steps_per_update)
        for i in range(start_update // chunk, self.num_updates // chunk):
            self.state, metrics = self.train_chunk(self.state, self.train_keys)
            self.newest_updates = (i + 1) * chunk
            self._unrecorded.append((self.newest_updates, metrics))
            if len(self._unrecorded) > 1:  # the previous chunk's (at most one waits)
                yield self._point(*self._unrecorded[0], checkpoint=False)
                self._unrecorded.pop(0)
            done = self.newest_updates
            saves = done % every == 0 or done == self.num_updates
            if saves or settings.eval_due((done - chunk) * spu, done * spu,
                                          self.num_updates * spu):
                yield self._point(*self._unrecorded[0], checkpoint=saves)
                self._unrecorded.pop(0)
        jax.block_until_ready(self.state)

    def pending(self) -> list[shell.LogPoint]:
        return [self._point(u, m, checkpoint=False) for u, m in self._unrecorded]

    def _point(self, done_updates: int, metrics, checkpoint: bool) -> shell.LogPoint:
        host = jax.device_get(metrics)
        done_steps = done_updates * self.steps_per_update
        now = time.time()
        t_last, steps_last = self._last
        self._last = (now, done_steps)
        returns = _per_episode(host, "episode_return_sum")
        record = {
            "env_steps": done_steps,
            "sps": (done_steps - steps_last) * self.num_seeds / max(now - t_last, 1e-9),
            "train/episode_return": _nanmean(returns),
            "train/episode_return_per_seed": returns,
            "train/episode_length": _nanmean(_per_episode(host, "episode_length_sum")),
            **{k: float(np.mean(v)) for k, v in host.items()
               if k not in on_device.SUM_METRICS and not _guard_only(k)},
        }
        return shell.LogPoint(done_updates, record, checkpoint, guard=host)

    def check_finite(self, point: shell.LogPoint, where: str) -> None:
        """Raises NonFiniteError naming where non-finite values first appeared (one of
        ``base.NONFINITE_PLACES``, in the order data flows), the first update and seed
        with one, and the logged metrics that went non-finite.

        The place is the first one flagged by the chunk's updates of that seed (its
        flags are averaged over the chunk): where the first bad update's values began
        unless an earlier place also went bad later in the chunk with finite
        parameters in between."""
        host = point.guard
        bad_update = np.asarray(host[on_device.NONFINITE_UPDATE])  # [S], -1: none
        params_ok = np.asarray(host[on_device.PARAMS_FINITE])  # [S]
        if np.all(bad_update < 0) and np.all(params_ok):
            return
        names = sorted(
            k for k, v in host.items()
            if not _guard_only(k) and not np.all(np.isfinite(np.asarray(v)))
        )
        if np.any(bad_update >= 0):
            update = int(np.min(bad_update[bad_update >= 0]))
            seed = int(np.flatnonzero(bad_update == update)[0])
            at = f"update {update}"
            place = base.first_nonfinite_place({k: np.asarray(v)[seed] for k, v in host.items()})
            seeds = np.flatnonzero(bad_update >= 0).tolist()
        else:  # only the parameters, and no update flagged them (changed outside ``learn``)
            seeds = np.flatnonzero(~params_ok).tolist()
            seed, at, place = seeds[0], f"after update {point.updates}", "parameters"
        raise errors.NonFiniteError(
            errors.nonfinite_message(place, f"{at}, seed {seed}", names, where, seeds)
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def save(self, checkpointer, updates: int, meta: dict[str, Any]) -> None:
        if updates != self.newest_updates:
            raise AssertionError(f"state holds update {self.newest_updates}, not {updates}")
        checkpointer.save(updates, self.state, meta)

    def close(self) -> None:
        pass

    def failure_params(self, nonfinite: bool) -> None:
        del nonfinite  # the whole-run checkpoints hold the last good state
        return None

    def evaluate(self) -> np.ndarray:
        """Greedy returns ``[S, eval_episodes]`` of ``state``'s parameters (every process
        calls it); the same evaluation key every time, so evaluations during training and
        the final one differ only in the parameters. The evaluator is compiled on the
        first call."""
        learner = self.learner
        if self._evaluator is None:
            self._evaluator = evaluation.make_evaluator(
                learner.env, learner.policy, learner.dist.mode, self.settings.eval_episodes,
                learner.tuning.run_once_options(),
            )
        key = jax.random.fold_in(jax.random.key(self.settings.seed), 2**31 - 1)
        return np.asarray(jax.device_get(self._evaluator(self.state.params, key)))

    def final_params(self) -> tuple[Any, Any]:
        return jax.device_get(self.state.params), self.state.params

    def summary_extras(self, run_steps: int) -> dict[str, Any]:
        del run_steps
        return {}

    def done_text(self, summary: dict[str, Any]) -> str:
        return (f"{summary['compile_s']:.1f}s compile ({self.tier}) + "
                f"{summary['init_s']:.1f}s initial state")

    def curve(self, history: list[dict[str, Any]]) -> np.ndarray:
        return np.array([
            [np.nan if r is None else r for r in h["train/episode_return_per_seed"]]
            for h in history
        ], dtype=np.float64).reshape(len(history), self.num_seeds)

