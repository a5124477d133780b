"""The console progress line: one ``progress_fn(env_steps, metrics)``."""

import math
import time
from collections.abc import Callable
from typing import Any

ProgressFn = Callable[[int, dict[str, Any]], None]


def number(value: Any, width: int = 8, decimals: int = 2) -> str:
    """``value`` as fixed-point text, ``width`` characters, ``decimals`` decimals; a missing
    or non-finite value (e.g. the return of a log window in which no episode finished:
    NaN) as ``-`` right-aligned to ``width``, never ``nan``."""
    try:
        finite = value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        finite = False
    return f"{float(value):{width}.{decimals}f}" if finite else f"{'-':>{width}}"


def console(log: Callable[[str], None], total_env_steps: int, every_s: float) -> ProgressFn:
    """A ``progress_fn`` printing one line through ``log`` at most every ``every_s`` seconds
    and at ``total_env_steps``: env steps, sps, the mean training return (``-`` for a log
    window in which no episode finished), the policy lag where the record has one, and
    the wall time."""
    last = [-math.inf]

    def progress_fn(env_steps: int, metrics: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and env_steps < total_env_steps:
            return
        last[0] = now
        lag = metrics.get("policy_lag/mean")
        log(
            f"env_steps {env_steps:>10d} | sps {number(metrics.get('sps'), 9, 0)} | "
            f"return {number(metrics.get('train/episode_return'))} | "
            + (f"lag {number(lag, 1)} | " if lag is not None else "")
            + f"wall {metrics['wall_s']:6.1f}s"
        )

    return progress_fn
