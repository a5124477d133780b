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
    """A loss, metric or parameter became NaN or infinite; the run was stopped.

    The message names the first bad update and the metrics; the last checkpoint
    (saved before that update) is kept.
    """
