"""A run's files: metrics history, the writers (config.json through ``config_file``), and
the checkpoint identity check on resume."""

import json
import os
from typing import Any

import jax

from jaxrl_dist import errors
from jaxrl_dist.run import config_file, writers


def read_history(workdir: str, max_env_steps: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The log records of ``<workdir>/metrics.jsonl`` up to ``max_env_steps`` (per seed),
    and the numbers (1-based) of the lines that could not be parsed (skipped: a line cut
    by a kill, or damaged), in that order.

    Stops at the summary line of a finished run or at the first record past
    ``max_env_steps``. A missing file gives no records.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return [], []
    history, damaged = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                steps = record["env_steps"]
                if not isinstance(steps, int):
                    raise TypeError(steps)
            except (json.JSONDecodeError, KeyError, TypeError):
                if line.strip():
                    damaged.append(number)
                continue
            if "params_sha256" in record or steps > max_env_steps:
                break
            history.append(record)
    return history, damaged


def recorded_params_sha256(workdir: str) -> str | None:
    """The ``params_sha256`` of the finished run's summary, the last line of
    ``<workdir>/metrics.jsonl`` that holds one (``None``: no such line, or no file)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    recorded = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if '"params_sha256"' not in line:
                continue
            try:
                value = json.loads(line)["params_sha256"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            if isinstance(value, str):
                recorded = value
    return recorded


def history_note(workdir: str, history: list[dict[str, Any]], damaged: list[int],
                 start_steps: int) -> str | None:
    """The one line a resume reports about metrics.jsonl (``None``: nothing to say)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return f"resume: {path} is missing; a new one starts at env step {start_steps}"
    if damaged:
        lines = ", ".join(map(str, damaged[:10])) + (" ..." if len(damaged) > 10 else "")
        return (f"resume: {path}: skipped {len(damaged)} unreadable line(s) ({lines}); "
                f"kept {len(history)} record(s)")
    return None


# What a run writes into its workdir (``clear_outputs`` removes them).
OUTPUTS = ("metrics.jsonl", "config.json", "learning_curve.png", "checkpoint", "checkpoints",
           "tensorboard")


def has_outputs(workdir: str) -> bool:
    """Whether ``workdir`` holds any of a run's ``OUTPUTS``."""
    return any(os.path.exists(os.path.join(workdir, name)) for name in OUTPUTS)


def clear_outputs(workdir: str) -> None:
    """Removes a run's ``OUTPUTS`` from ``workdir`` (anything else there stays)."""
    import shutil

    for name in OUTPUTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def holds_run(workdir: str) -> bool:
    """Whether ``workdir`` holds a run that got somewhere: a metrics.jsonl record or a
    whole-run checkpoint. A run that stopped before its first update leaves neither
    (only config.json, an empty metrics.jsonl, tensorboard/): its workdir can be reused."""
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            if any(line.strip() for line in f):
                return True
    checkpoints = os.path.join(workdir, "checkpoints")
    return os.path.isdir(checkpoints) and any(
        name.isdigit() for name in os.listdir(checkpoints)
    )


def check_identity(saved: dict[str, Any], now: dict[str, Any], workdir: str) -> None:
    """Raises ConfigError (one line) naming the first entry of ``now`` that ``saved`` (a
    checkpoint's meta) differs in; for dict entries, every differing key."""
    for name, value in now.items():
        old = saved.get(name)
        if old == value:
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            diff = ", ".join(f"{k}={old.get(k)!r} (now {value.get(k)!r})"
                             for k in sorted(value.keys() | old.keys())
                             if old.get(k) != value.get(k))
            raise errors.ConfigError(
                f"--resume: the checkpoint in {workdir} was made with {name} {diff}"
            )
        raise errors.ConfigError(
            f"--resume: the checkpoint in {workdir} was made with a different {name} "
            f"({old!r}, now {value!r})"
        )


def abstract_state(init, init_args, shardings) -> Any:
    """The state ``init(*init_args)`` returns, as ``ShapeDtypeStruct`` leaves carrying
    ``shardings`` (a prefix tree of ``NamedSharding``): what a checkpoint restores into."""
    shapes = jax.eval_shape(init, *init_args)
    return jax.tree.map(
        lambda sharding, sub: jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), sub
        ),
        shardings, shapes,
        is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding),
    )


def open_writer(workdir: str, history: list[dict] | None, purge_step: int | None,
                wandb_project: str | None, config: Any,
                config_record: dict[str, Any]) -> writers.MetricsWriter:
    """Writes config.json (``config``'s fields, ``agent``, ``config_record``) and opens the
    metrics writer; ``history``/``purge_step``: the records kept when resuming."""
    import dataclasses

    writer = writers.MetricsWriter(
        workdir, history, purge_step=purge_step, wandb_project=wandb_project,
        config=dict(dataclasses.asdict(config), agent=config.agent, seed=config_record["seed"]),
    )
    config_file.write(workdir, config, agent=config.agent, **config_record)
    return writer
