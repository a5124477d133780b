"""Host-side sums of what actor threads report between two log points, and their record.

The learner loop adds every update's rollouts and metrics to an ``Interval``;
at a log point ``record`` turns it into one metrics.jsonl record (episode
returns, env steps/s, policy lag, env faults, timings, the learner's metrics
averaged over the interval's updates); ``check_finite`` is the host path's
finite guard; ``LagStats`` keeps the run's policy-lag summary (checkpointed).
"""

import jax
import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.agents import base
from jaxrl_dist.sebulba import actor as host_actor


class Interval:
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
        self.actor_restarts = 0  # Ray actor processes replaced so far (run total)

    def add_rollout(self, rollout: host_actor.Rollout, version: int) -> None:
        self.lags.append(version - rollout.version)
        for i, value in enumerate(rollout.episode_sums):
            self.episodes[i] += value
        for name, value in rollout.timings.items():
            self.timings[name] += value
        self.env_steps += rollout.env_steps


class LagStats:
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


def gather_interval(interval: Interval) -> None:
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


def check_finite(interval: Interval, done_updates: int, params_finite: bool,
                  good_update: int) -> None:
    """Raises NonFiniteError naming where non-finite values first appeared (one of
    ``base.NONFINITE_PLACES``, in the order data flows, from the update's flags), the
    first update of ``interval`` with one, and its logged metrics that went non-finite."""
    where = f"parameters of update {good_update} (the last finite ones) saved in checkpoint/"
    first = done_updates - len(interval.metrics) + 1
    for i, metrics in enumerate(jax.device_get(interval.metrics)):
        bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
        if bad:
            names = [k for k in bad if not base.is_nonfinite_flag(k)]
            raise errors.NonFiniteError(errors.nonfinite_message(
                base.first_nonfinite_place(metrics), f"update {first + i}", names, where))
    if not params_finite:  # no update flagged them: changed outside ``learn``
        raise errors.NonFiniteError(errors.nonfinite_message(
            "parameters", f"after update {done_updates}", [], where))


def record(interval: Interval, env_steps: int, dt: float) -> dict:
    host_metrics = jax.device_get(interval.metrics)
    returns, lengths, count = interval.episodes
    record = {
        "env_steps": env_steps,
        "actor_env_steps": interval.actor_env_steps,
        "sps": interval.env_steps / dt,
        "train/episode_return": returns / count if count else float("nan"),
        "train/episode_length": lengths / count if count else float("nan"),
        "train/episodes": count,
        "policy_lag/min": int(min(interval.lags)),
        "policy_lag/mean": float(np.mean(interval.lags)),
        "policy_lag/max": int(max(interval.lags)),
        "env_faults": interval.env_faults,
        "actor_restarts": interval.actor_restarts,
        **{f"time/{k}": v for k, v in interval.timings.items()},
    }
    for name in host_metrics[0]:
        if not base.is_nonfinite_flag(name):  # the finite guard's
            record[name] = float(np.mean([m[name] for m in host_metrics]))
    return record
