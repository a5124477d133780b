"""Errors raised for bad user input."""


class ConfigError(ValueError):
    """A configuration value is not allowed.

    The message is one line that names the flag/argument and what is allowed,
    e.g. ``--lr must be > 0, got -1.0``. Entry points print it and exit with
    code 2 before anything is compiled.
    """


class ActorError(RuntimeError):
    """An actor thread failed (or stalled); the run was stopped and its threads joined."""


class NonFiniteError(FloatingPointError):
    """An observation, reward, loss, gradient, parameter or metric became NaN or infinite;
    the run was stopped.

    The message (``nonfinite_message``) names where the non-finite values first
    appeared, in the order data flows (observations, rewards, loss, gradients,
    parameters), the first bad update (and seed) and the logged metrics that went
    non-finite; the last checkpoint (saved before that update) is kept.
    """


def nonfinite_message(place: str | None, at: str, names: list[str], where: str,
                      seeds: list[int] = ()) -> str:
    """The one-line message of a ``NonFiniteError``.

    Args:
      place: where non-finite values first appeared (``agents.base.NONFINITE_PLACES``),
        or ``None`` when only logged metrics show them.
      at: the first bad update, e.g. ``"update 12, seed 0"``.
      names: the logged metrics that went non-finite (sorted).
      where: what was kept, e.g. ``"last good checkpoint: update 10 in <dir>"``.
      seeds: every seed with a non-finite value (listed when more than one).
    """
    if place:
        parts = [f"non-finite values first in {place} ({at})"]
        if names:
            parts.append(f"non-finite metrics: {', '.join(names)}")
    else:
        parts = [f"non-finite {', '.join(names) or 'metrics'} ({at})"]
    if len(seeds) > 1:
        parts.append(f"seeds with non-finite values: {list(seeds)}")
    return "; ".join([*parts, f"stopped, {where}"])
