"""The run shell: one outer loop for every acting path.

``run`` reads top to bottom as the steps of a run; the acting path
(``ActingPath``) supplies what differs: how the state is made, restored and
saved, how updates are run and turned into log points, how the finished policy
is evaluated. The shell owns the settings check, the resume identity check, the
run files (metrics.jsonl, TensorBoard, config.json, checkpoints, final params,
learning curve), progress reporting, the finite guard, the checkpoint cadence,
and what is kept when a run stops early.

In a multi-process run (``jax.distributed``) every process runs the shell; only
process 0 writes metrics, config.json and the plot and reports progress; every
process takes part in checkpoint saves.
"""

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.run import checkpoint, files, memory, writers
from jaxrl_dist.run import progress as progress_lib
from jaxrl_dist.run.settings import RunSettings, checkpoint_period


class LogPoint(NamedTuple):
    """What a path reports after ``updates`` updates: the metrics ``record`` (without
    ``wall_s``, which the shell adds), whether a whole-run checkpoint is due, and
    ``guard``, the path's own data for its finite check.

    ``record["sps"]``, where present: env steps of all seeds since the previous log point
    per second since it; the shell takes the seconds of an evaluation made at the
    previous log point out of it (``_Shell._without_eval_time``)."""

    updates: int
    record: dict[str, Any]
    checkpoint: bool
    guard: Any = None


class ActingPath(Protocol):
    """How one acting path plugs into ``run``.

    Attributes: ``config`` (the agent's), ``title`` (of the plot), ``num_seeds``,
    ``num_updates``, ``steps_per_update`` (env steps per update and seed),
    ``identity`` (JSON-able: what a resumed checkpoint must have been made with),
    ``primary`` (this process writes the run files), ``saves_on_interrupt``
    (the newest state can be checkpointed after a Ctrl-C), ``newest_updates``
    (updates behind the newest state).

    Evaluation during training (``RunSettings.eval_every``): while the shell records a
    log point that ``RunSettings.eval_due`` names, the path's state must be that log
    point's (``newest_updates == point.updates``), since the shell then calls
    ``evaluate``; every process records every log point, so ``evaluate`` may be a
    collective.
    """

    config: Any
    title: str
    num_seeds: int
    num_updates: int
    steps_per_update: int
    identity: dict[str, Any]
    primary: bool
    saves_on_interrupt: bool
    newest_updates: int

    def config_record(self) -> dict[str, Any]:
        """Fields of config.json besides the config (settings, layout, backend)."""

    def memory_parts(self) -> tuple[list[memory.Part], Any, dict[str, Any]]:
        """``(parts, one device, flag values)``: the memory the run needs per device
        (estimated without compiling or allocating; see ``run.memory``)."""

    def restore(self, checkpointer: checkpoint.RunCheckpointer, step: int) -> None:
        """Restores the state of checkpoint ``step`` (ConfigError: it does not fit)."""

    def chunk(self, start_update: int) -> int:
        """Updates between possible log points (checkpoints are a multiple of it)."""

    def prepare(self, start_update: int, every: int, saving: bool) -> dict[str, Any]:
        """Makes the initial state (unless restored) and compiles; returns timings.
        ``every``: updates between checkpoints; ``saving``: checkpoints are written."""

    def log_points(self, start_update: int, every: int) -> Iterator[LogPoint]:
        """Runs the updates, yielding a ``LogPoint`` at each log point."""

    def pending(self) -> list[LogPoint]:
        """After an interrupt: the finished updates' log points not yet yielded."""

    def check_finite(self, point: LogPoint, where: str) -> None:
        """Raises NonFiniteError if ``point`` holds a NaN/inf (``where``: what is saved)."""

    def checkpoint_meta(self) -> dict[str, Any]:
        """The path's own entries of a checkpoint's meta."""

    def save(self, checkpointer: checkpoint.RunCheckpointer, updates: int,
             meta: dict[str, Any]) -> None:
        """Saves the state after ``updates`` updates (every process calls it)."""

    def close(self) -> None:
        """Stops what the path started (actor threads); idempotent."""

    def failure_params(self, nonfinite: bool) -> Any:
        """Parameters to keep in ``checkpoint/`` when the run fails, or ``None``."""

    def evaluate(self) -> np.ndarray:
        """Greedy evaluation returns ``[S, eval_episodes]`` of the newest parameters (the
        final ones after training; those of a log point during it)."""

    def final_params(self) -> tuple[Any, Any]:
        """``(host copy, global arrays)`` of the final parameters."""

    def summary_extras(self, run_steps: int) -> dict[str, Any]:
        """The path's own summary entries (collectives allowed: every process calls it)."""

    def done_text(self, summary: dict[str, Any]) -> str:
        """The middle of the final ``done:`` line (compile and path figures)."""

    def curve(self, history: list[dict[str, Any]]) -> np.ndarray:
        """``[points, S]`` training returns of ``history``, for the learning curve."""


def run(path: ActingPath, settings: RunSettings, workdir: str | None = None,
        log: Callable[[str], None] = print,
        progress_fn: progress_lib.ProgressFn | None = None) -> dict[str, Any]:
    """Runs ``path`` from start (or its latest checkpoint) to its summary.

    Args:
      path: the acting path, built for ``settings``.
      settings: the run's ``RunSettings``.
      workdir: where metrics.jsonl, tensorboard/, config.json, checkpoints/,
        checkpoint/ and learning_curve.png go (``None``: nothing is written).
      log: receives one-line messages (compile, done, interrupted).
      progress_fn: ``(env_steps, metrics)`` at every log point (process 0 only);
        default: a console line through ``log`` every ``settings.progress_every_s``.

    Returns:
      The summary dict (``env_steps`` per seed, ``wall_s``, the path's timings,
      ``train_s`` (seconds of the training loop without the evaluations in it),
      ``eval_s`` (seconds of those evaluations, 0.0 without ``eval_every``), ``sps``
      over all seeds after compilation (``/ train_s``), ``eval/*``, ``params_sha256``,
      the path's extras) plus ``eval/returns`` ``[S, E]``, ``params``, ``history`` and
      ``resumed_from`` (updates restored, 0).

      With ``settings.eval_every`` > 0 the log points that ``RunSettings.eval_due``
      names (the first at or after each multiple of ``eval_every`` env steps per seed,
      and the last) also hold ``eval/episode_return`` (float: mean over seeds and
      episodes), ``eval/episode_return_per_seed`` (``[S]``) and ``time/eval_s`` (seconds
      it took, on device the first one's with the evaluator's compile; not counted in
      any ``sps`` or in ``train_s``), of the parameters of that log point's update; the
      last one's is the final evaluation (made once).

    Raises:
      ConfigError: bad settings, a config needing more device memory than is free
        (``run.memory.check``), or ``resume`` finds no checkpoint that reads back and
        verifies, or one made with another config (before anything compiles).
      NonFiniteError: a metric or parameter became NaN/inf; the last checkpoint
        (written before the bad update) is kept.
      KeyboardInterrupt, ActorError: after keeping what finished (see the path).
    """
    settings = settings.check()
    memory.check(*path.memory_parts())  # before anything is allocated, compiled or written
    shell = _Shell(path, settings, workdir, log, progress_fn)
    start_update = shell.resume()
    shell.open_files(start_update)
    shell.prepare(start_update)
    shell.train(start_update)
    return shell.finish(start_update)


class _Shell:
    """The state of one ``run``: files, timings and what was logged and saved."""

    def __init__(self, path, settings, workdir, log, progress_fn):
        self.t_start = time.time()
        self.path, self.settings, self.workdir = path, settings, workdir
        self.log = log if path.primary else (lambda s: None)
        total = path.num_updates * path.steps_per_update
        self.progress_fn = (progress_fn or progress_lib.console(
            self.log, total, settings.progress_every_s)) if path.primary else None
        self.checkpointer = checkpoint.RunCheckpointer(
            os.path.join(workdir, "checkpoints")) if workdir else None
        self.meta: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.writer = None
        self.recorded = None
        self.timings: dict[str, Any] = {}
        self.eval_s = 0.0  # seconds of the evaluations during training
        self.eval_owed = 0.0  # of them, those not yet taken out of a record's sps
        self.final_eval: np.ndarray | None = None  # made at the last log point

    # ----------------------------------------------------------- the steps
    def resume(self) -> int:
        """Restores the newest checkpoint that reads back and verifies if ``resume``
        (identity checked first); the updates it holds (0 for a new run). Newer damaged
        checkpoints are reported in one line and set aside (``checkpoints.damaged/``)."""
        if not self.settings.resume:
            return 0
        steps = self.checkpointer.steps() if self.checkpointer else []
        if not steps:
            raise errors.ConfigError(f"--resume: no checkpoint in {self.workdir}/checkpoints")
        skipped = []
        for step in steps:
            try:
                self.meta = self.checkpointer.meta(step)  # before any array is read
                files.check_identity(self.meta, self.path.identity, self.workdir)
                self.path.restore(self.checkpointer, step)
                break
            except checkpoint.DamagedCheckpoint as e:
                skipped.append((step, str(e)))
        else:
            raise errors.ConfigError(
                f"--resume: no checkpoint in {self.checkpointer.directory} reads back and "
                f"verifies: {'; '.join(f'{s} ({why})' for s, why in skipped)}"
            )
        if skipped:
            aside = self.checkpointer.set_aside([s for s, _ in skipped])
            said = "; ".join(f"{s} ({why})" for s, why in skipped)
            self.log(f"resume: skipped newer checkpoint(s) {said} (moved to "
                     f"{aside}); restored update {step}")
        return step

    def open_files(self, start_update: int) -> None:
        """The kept history and, on process 0, the writers and config.json."""
        resumed = self.settings.resume
        steps = start_update * self.path.steps_per_update
        if self.workdir and resumed:
            self.history, damaged = files.read_history(self.workdir, steps)
            note = files.history_note(self.workdir, self.history, damaged, steps)
            if note:
                self.log(note)
        if self.workdir and self.path.primary:
            self.writer = files.open_writer(
                self.workdir, self.history if resumed else None,
                steps + 1 if resumed else None, self.settings.wandb_project,
                self.path.config, self.path.config_record(),
            )
        self.recorded = start_update

    def prepare(self, start_update: int) -> None:
        """The path's initial state and compiled programs."""
        path = self.path
        self.every = checkpoint_period(
            path.num_updates, path.chunk(start_update), self.settings.checkpoint_every,
            path.steps_per_update,
        )
        self.timings = path.prepare(start_update, self.every, self.checkpointer is not None)

    def train(self, start_update: int) -> None:
        """Runs the updates: each log point recorded, guarded and, when due, checkpointed.
        On a failure keeps what finished (see ``_stopped``)."""
        self.t_train = time.time()
        try:
            for point in self.path.log_points(start_update, self.every):
                self._record(point)
                if point.checkpoint:
                    self._save(point.updates)
        except BaseException as e:
            self.path.close()
            self._stopped(e, start_update)
            raise
        finally:
            self.path.close()
            if self.checkpointer:
                self.checkpointer.close()
        self.train_s = time.time() - self.t_train - self.eval_s

    def finish(self, start_update: int) -> dict[str, Any]:
        """Evaluates the final parameters, saves them and writes the summary and plot."""
        path = self.path
        env_steps = path.num_updates * path.steps_per_update
        run_steps = env_steps - start_update * path.steps_per_update
        eval_returns = self.final_eval
        if eval_returns is None:
            eval_returns = np.asarray(path.evaluate())
        params, global_params = path.final_params()
        per_seed = eval_returns.mean(axis=1)
        summary = {
            "env_steps": env_steps,
            "wall_s": self._wall_s(),
            **self.timings,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            "sps": run_steps * path.num_seeds / self.train_s if run_steps else float("nan"),
            "eval/episode_return": float(eval_returns.mean()),
            "eval/episode_return_per_seed": per_seed,
            "eval/episode_return_std_over_seeds": float(per_seed.std()),
            **path.summary_extras(run_steps),
            "params_sha256": checkpoint.params_sha256(params),
        }
        self.log(
            f"done: {env_steps} env steps/seed in {self.train_s:.1f}s ({summary['sps']:.0f} "
            f"sps) + {path.done_text(summary)}"
            + (f" + {self.eval_s:.1f}s greedy evals during training" if self.eval_s else "")
            + " | greedy eval return "
            f"{summary['eval/episode_return']:.1f} (per seed: "
            f"{', '.join(f'{r:.1f}' for r in per_seed)})"
        )
        if self.workdir:  # every process joins the save of the (global) parameters
            checkpoint.save_params(os.path.join(self.workdir, "checkpoint"), global_params)
        if self.writer:
            self.writer.write(summary)
            self.writer.close()
            steps = np.array([h["env_steps"] for h in self.history])
            writers.plot_learning_curve(
                self.workdir, steps, path.curve(self.history), path.title,
                eval_returns=summary["eval/episode_return_per_seed"], eval_step=env_steps,
                periodic_eval=writers.eval_series(self.history),
            )
        return dict(summary, **{
            "eval/returns": eval_returns, "params": params, "history": self.history,
            "resumed_from": start_update,
        })

    # -------------------------------------------------------------- pieces
    def _wall_s(self) -> float:
        return float(self.meta.get("wall_s", 0.0)) + time.time() - self.t_start

    def _last_saved(self) -> int | None:
        """Updates behind the newest checkpoint restored or saved in full. The
        checkpointer counts a save as it ends, inside ``sigterm.deferred``: an interrupt
        raised just after it never finds the checkpoint written but uncounted (which
        ``_stopped`` would save again)."""
        return None if self.checkpointer is None else self.checkpointer.last_good_step

    def _where(self) -> str:
        last = self._last_saved()
        if last is None:
            return "no checkpoint was saved"
        return f"last good checkpoint: update {last} in {self.checkpointer.directory}"

    def _record(self, point: LogPoint, evaluate: bool = True) -> None:
        """Logs ``point`` once (history, metrics.jsonl, progress): guards it, then, where
        due and ``evaluate``, adds the greedy evaluation of its parameters. The record is
        logged also when the guard or the evaluation raises (without the evaluation)."""
        if point.updates <= self.recorded:
            return  # logged already (a Ctrl-C can land after the write)
        record = {"env_steps": point.record["env_steps"], "wall_s": self._wall_s(),
                  **point.record}
        self._without_eval_time(record, point.updates)
        spu = self.path.steps_per_update
        try:
            self.path.check_finite(point, self._where())  # no evaluation of NaN parameters
            if evaluate and self.settings.eval_due(
                    self.recorded * spu, point.updates * spu, self.path.num_updates * spu):
                record.update(self._evaluate(point.updates))
        finally:
            self.history.append(record)
            if self.writer:
                self.writer.write(record)
            self.recorded = point.updates
            if self.progress_fn:
                self.progress_fn(record["env_steps"], record)

    def _evaluate(self, updates: int) -> dict[str, Any]:
        """The greedy evaluation of the parameters after ``updates`` updates (the path's
        newest), as record entries; its seconds are counted in ``eval_s``.

        Raises:
          AssertionError: the path's state is not that of update ``updates``.
        """
        path = self.path
        if path.newest_updates != updates:
            raise AssertionError(
                f"{type(path).__name__} holds update {path.newest_updates}, not {updates}: "
                f"it cannot evaluate that log point"
            )
        t0 = time.time()
        returns = np.asarray(path.evaluate())
        seconds = time.time() - t0
        self.eval_s += seconds
        self.eval_owed += seconds
        if updates == path.num_updates:
            self.final_eval = returns
        return {"eval/episode_return": float(returns.mean()),
                "eval/episode_return_per_seed": returns.mean(axis=1), "time/eval_s": seconds}

    def _without_eval_time(self, record: dict[str, Any], updates: int) -> None:
        """Takes the seconds of the evaluations since the previous log point out of
        ``record["sps"]`` (the env steps of all seeds since it, per second since it)."""
        owed, self.eval_owed = self.eval_owed, 0.0
        sps = record.get("sps")
        steps = (updates - self.recorded) * self.path.steps_per_update * self.path.num_seeds
        if not owed or not steps or not sps or not np.isfinite(sps):
            return
        seconds = steps / float(sps) - owed
        if seconds > 0:
            record["sps"] = steps / seconds

    def _save(self, updates: int) -> None:
        if self.checkpointer is None:
            return
        path = self.path
        self.path.save(self.checkpointer, updates, dict(
            path.identity, updates=updates, env_steps=updates * path.steps_per_update,
            wall_s=self._wall_s(), **path.checkpoint_meta(),
        ))

    def _stopped(self, error: BaseException, start_update: int) -> None:
        """Keeps what finished before ``error``: after a Ctrl-C the finished updates'
        log points and (where the path can) their state; after any failure the
        path's last good parameters in ``checkpoint/``. A second Ctrl-C or SIGTERM
        while this runs (held back during a save) ends what it does, not the rest."""
        path = self.path
        if isinstance(error, KeyboardInterrupt):
            try:
                for point in path.pending():
                    self._record(point, evaluate=False)
                newest = path.newest_updates
                if path.saves_on_interrupt and newest > start_update and (
                        newest != self._last_saved()):
                    self._save(newest)
            except KeyboardInterrupt:
                pass  # pressed again: the run is stopping already
            finally:
                self.log(f"interrupted: {self._where()}")
        if self.writer:
            try:
                params = path.failure_params(isinstance(error, errors.NonFiniteError))
                if params is not None:
                    checkpoint.save_params(
                        os.path.join(self.workdir, "checkpoint"), params,
                        this_process_only=True,
                    )
            finally:  # also after a Ctrl-C held back during that save
                self.writer.close()
