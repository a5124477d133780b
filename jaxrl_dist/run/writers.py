"""Host-side outputs: metrics.jsonl, TensorBoard events, the learning-curve PNG (config.json:
``run/config_file.py``)."""

import json
import math
import os
import warnings
from typing import Any, NamedTuple

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


class CurveSeries(NamedTuple):
    """The learning curve's plotted points: only log points where some seed has a value.

    ``steps`` ``[M]`` env steps; ``mean``, ``low``, ``high`` ``[M]`` float64: mean, min and
    max over the seeds with a finite return there (a seed whose window held no finished
    episode is skipped at that point, not counted as 0); ``M`` <= the number of log
    points, 0 when no window had a finished episode.
    """

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


# Fewer plotted points than this are drawn with markers: a curve of a few isolated
# windows (most windows without a finished episode, e.g. Freeway) stays visible.
SPARSE_POINTS = 20


def curve_series(env_steps: np.ndarray, returns: np.ndarray) -> CurveSeries:
    """The finite points of ``returns`` ``[N, S]`` (NaN: no episode finished in that
    window) against ``env_steps`` ``[N]``, reduced over seeds (see ``CurveSeries``).

    Raises:
      ValueError: ``returns`` is not ``[N, S]`` with ``N = len(env_steps)``.
    """
    steps = np.asarray(env_steps, np.float64).reshape(-1)
    values = np.asarray(returns, np.float64)
    if values.ndim != 2 or values.shape[0] != steps.shape[0]:
        raise ValueError(
            f"returns must be [N, S] with N = len(env_steps) = {steps.shape[0]}, "
            f"got shape {values.shape}"
        )
    finite = np.isfinite(values)
    keep = finite.any(axis=1)
    masked = np.where(finite, values, np.nan)[keep]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return CurveSeries(steps[keep], np.nanmean(masked, axis=1),
                           np.nanmin(masked, axis=1), np.nanmax(masked, axis=1))


def eval_series(history: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The greedy evaluations made during training, from a run's log records.

    Args:
      history: metrics records; those with ``eval/episode_return_per_seed`` (a list or
        array of ``S`` returns, ``None`` or NaN for a missing value) are taken.

    Returns:
      ``(env_steps [K] float64, returns [K, S] float64)``, in the records' order; ``K``
      is 0 (returns ``[0, 0]``) when no record has an evaluation.
    """
    points = [(h["env_steps"], h["eval/episode_return_per_seed"]) for h in history
              if h.get("eval/episode_return_per_seed") is not None]
    if not points:
        return np.zeros(0), np.zeros((0, 0))
    steps = np.array([p[0] for p in points], np.float64)
    returns = np.array([[np.nan if r is None else r for r in np.ravel(p[1])]
                        for p in points], np.float64)
    return steps, returns


def learning_curve_figure(
    env_steps: np.ndarray, returns: np.ndarray, title: str,
    eval_returns: np.ndarray | float | None = None, eval_step: float | None = None,
    periodic_eval: tuple[np.ndarray, np.ndarray] | None = None,
):
    """The learning curve as a matplotlib ``Figure`` (see :func:`plot_learning_curve`).

    Its one axes holds, in this order: the mean training return line (label starting
    ``"mean of"``; markers when fewer than ``SPARSE_POINTS`` points; absent when no
    window had a finished episode), the min-max band over seeds (more than one seed),
    the greedy evaluations during training (one dashed line with square markers,
    label ``PERIODIC_EVAL_LABEL``; when ``periodic_eval`` has a finite value), and the
    final greedy evaluation errorbar (label starting ``"greedy eval"``; when
    ``eval_returns`` has a finite value).
    """
    # The object-oriented API: no pyplot import (~0.5 s), no global backend or figure state.
    from matplotlib.figure import Figure

    returns = np.asarray(returns, np.float64)
    num_seeds = returns.shape[1] if returns.ndim == 2 else 1
    series = curve_series(env_steps, returns)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if series.steps.size:
        sparse = series.steps.size < SPARSE_POINTS
        ax.plot(series.steps, series.mean, marker="o" if sparse else None,
                markersize=4, label=f"mean of {num_seeds} seed(s)")
        if num_seeds > 1:
            ax.fill_between(series.steps, series.low, series.high, alpha=0.3,
                            label="min-max over seeds")
    else:
        ax.text(0.5, 0.06, "no training episode finished in any log window",
                transform=ax.transAxes, ha="center", va="bottom", color="gray")
    end = _draw_periodic_eval(ax, periodic_eval)
    end = max(end, _draw_eval(ax, np.asarray(env_steps, np.float64).reshape(-1),
                              eval_returns, eval_step))
    if end > 0:  # the whole run, from step 0, however few points it has
        ax.set_xlim(0, 1.04 * end)
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return fig


# The legend label of the greedy evaluations made during training.
PERIODIC_EVAL_LABEL = "greedy eval during training"


def _draw_periodic_eval(ax, periodic_eval) -> float:
    """Draws the mean over seeds of each evaluation of ``periodic_eval``
    (``(env_steps [K], returns [K, S] or [K])``; NaN values skipped, points without any
    finite value left out) as square markers joined by a dashed line; returns the largest
    env step drawn (0.0 when none)."""
    steps = np.zeros(0) if periodic_eval is None else np.asarray(periodic_eval[0],
                                                                  np.float64).reshape(-1)
    if not steps.size:
        return 0.0
    values = np.asarray(periodic_eval[1], np.float64).reshape(steps.size, -1)
    finite = np.isfinite(values)
    keep = finite.any(axis=1)
    if not keep.any():
        return 0.0
    means = np.where(finite, values, 0.0).sum(axis=1)[keep] / finite.sum(axis=1)[keep]
    ax.plot(steps[keep], means, linestyle="--", marker="s", markersize=4,
            color="tab:red", alpha=0.8, label=PERIODIC_EVAL_LABEL)
    return float(steps[keep].max())


def _draw_eval(ax, env_steps: np.ndarray, eval_returns, eval_step) -> float:
    """Draws the greedy eval return (mean over seeds, min-max error bar) at ``eval_step``
    (default: the last log point's env steps; 0 without one); returns the largest env
    step on the plot."""
    if eval_step is None:
        eval_step = float(env_steps[-1]) if env_steps.size else 0.0
    end = max(float(eval_step), float(env_steps.max()) if env_steps.size else 0.0)
    values = np.asarray(np.nan if eval_returns is None else eval_returns, np.float64)
    values = values.reshape(-1)[np.isfinite(values.reshape(-1))]
    if not values.size:
        return end
    mean = values.mean()
    yerr = [[mean - values.min()], [values.max() - mean]] if values.size > 1 else None
    ax.errorbar([eval_step], [mean], yerr=yerr, fmt="D", color="tab:red", capsize=4,
                label=f"greedy eval ({values.size} seed(s))")
    return end


def plot_learning_curve(
    workdir: str, env_steps: np.ndarray, returns: np.ndarray, title: str,
    eval_returns: np.ndarray | float | None = None, eval_step: float | None = None,
    periodic_eval: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """Saves ``learning_curve.png``: mean training return over seeds against env steps,
    min-max band, the greedy eval returns during training and the final greedy eval
    return; returns its path.

    Log windows in which no episode finished (NaN) are skipped per seed: the curve
    joins the points that exist (markers when there are few), and a run with none
    still gets a PNG (with the eval point and a note).

    Args:
      env_steps: ``[N]`` env steps (per seed) at each log point.
      returns: ``[N, S]`` mean training episode return per seed (NaN where no
        episode finished).
      title: the plot's title.
      eval_returns: optional greedy eval return per seed ``[S]`` (or one float),
        drawn at ``eval_step`` as the mean with a min-max error bar.
      eval_step: env steps (per seed) of the eval point (default: ``env_steps[-1]``).
      periodic_eval: optional greedy evaluations during training, ``(env_steps [K],
        returns [K, S])`` (e.g. ``eval_series(history)``), drawn as the mean over seeds
        at each point, square markers joined by a dashed line.

    Raises:
      ValueError: ``returns`` is not ``[N, S]``; OSError: the PNG cannot be written.
    """
    path = os.path.join(workdir, "learning_curve.png")
    learning_curve_figure(
        env_steps, returns, title, eval_returns, eval_step, periodic_eval
    ).savefig(path, dpi=100)
    return path
