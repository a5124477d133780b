"""Host-side outputs: metrics.jsonl, TensorBoard events, config.json, the learning-curve PNG."""

import dataclasses
import json
import math
import os
import warnings
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class MetricsWriter:
    """Appends one JSON object per line to ``<workdir>/metrics.jsonl`` (flushed each write)
    and the same scalars to TensorBoard event files in ``<workdir>/tensorboard/``
    (tensorboardX; step = the record's ``env_steps``).

    Non-finite floats are written as ``null`` in JSON and skipped in TensorBoard.
    Call from the host loop's thread only.

    Args:
      workdir: the run's directory.
      keep: when resuming, the records to keep: metrics.jsonl is atomically
        rewritten with just these (dropping what a killed run logged after its
        last checkpoint) before appending.
      purge_step: when resuming, TensorBoard discards the earlier events at
        steps >= this (tensorboardX ``purge_step``).
      wandb_project: also log to this Weights & Biases project (``wandb.init``
        here, ``wandb.log`` on each write, ``finish`` on close, all from the
        calling thread: the host loop's, never an actor's).
      config: the run's config, for W&B.

    Raises:
      ConfigError: ``wandb_project`` is given but wandb is not installed.
    """

    def __init__(
        self, workdir: str, keep: list[dict[str, Any]] | None = None,
        purge_step: int | None = None, wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
    ):
        self._wandb = None
        if wandb_project:
            self._wandb = start_wandb(wandb_project, workdir, config or {})
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        if keep is not None:
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                for record in keep:
                    f.write(json.dumps({k: jsonable(v) for k, v in record.items()}) + "\n")
            os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"), flush_secs=10, purge_step=purge_step
        )
        self._step = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        self._step = int(record.get("env_steps", self._step))
        for name, value in record.items():
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                continue
            if math.isfinite(float(value)) and name != "env_steps":
                self._tb.add_scalar(name, float(value), self._step)
        if self._wandb is not None:
            self._wandb.log(
                {k: float(v) for k, v in record.items()
                 if isinstance(v, (int, float, np.integer, np.floating))
                 and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v))},
                step=self._step,
            )

    def close(self) -> None:
        self._file.close()
        self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def check_wandb(project: str | None) -> None:
    """Raises ConfigError when ``--wandb_project`` is set but wandb cannot be imported."""
    if project:
        try:
            import wandb  # noqa: F401
        except ImportError:
            from jaxrl_dist import errors

            raise errors.ConfigError(
                "--wandb_project needs the wandb package: pip install wandb "
                "(or leave --wandb_project unset)"
            ) from None


def start_wandb(project: str, workdir: str, config: dict[str, Any]):
    """A W&B run in ``project`` for ``workdir`` (its name; resumed when the id exists)."""
    check_wandb(project)
    import wandb

    run_id = os.path.basename(os.path.abspath(workdir))
    return wandb.init(
        project=project, dir=workdir, name=run_id, id=run_id, resume="allow",
        config={k: jsonable(v) for k, v in config.items()},
    )


def write_config(workdir: str, config: Any, **extra: Any) -> str:
    """Writes the resolved config (a dataclass) and ``extra`` run settings to config.json."""
    path = os.path.join(workdir, "config.json")
    record = dict(dataclasses.asdict(config), **extra)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({k: jsonable(v) for k, v in record.items()}, f, indent=2, sort_keys=True)
    return path


def plot_learning_curve(
    workdir: str, env_steps: np.ndarray, returns: np.ndarray, title: str
) -> str:
    """Saves ``learning_curve.png``: mean return over seeds against env steps, min-max band.

    Args:
      env_steps: ``[N]`` env steps (per seed) at each log point.
      returns: ``[N, S]`` mean training episode return per seed (NaN where no
        episode finished).
    """
    # The object-oriented API: no pyplot import (~0.5 s), no global backend or figure state.
    from matplotlib.figure import Figure

    path = os.path.join(workdir, "learning_curve.png")
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no episode yet
        mean = np.nanmean(returns, axis=1)
        low, high = np.nanmin(returns, axis=1), np.nanmax(returns, axis=1)
    ax.plot(env_steps, mean, label=f"mean of {returns.shape[1]} seed(s)")
    if returns.shape[1] > 1:
        ax.fill_between(env_steps, low, high, alpha=0.3, label="min-max over seeds")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("training episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
