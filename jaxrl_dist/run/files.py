"""A run's files: metrics history, config.json, the writers, and the resume identity check."""

import json
import os
from typing import Any

import jax

from jaxrl_dist import errors, writers


def read_history(workdir: str, max_env_steps: int) -> list[dict[str, Any]]:
    """The log records of ``<workdir>/metrics.jsonl`` up to ``max_env_steps`` (per seed).

    Stops at a line cut by a kill or at the summary line of a finished run.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    history = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                break
            if "params_sha256" in record or record.get("env_steps", 0) > max_env_steps:
                break
            history.append(record)
    return history


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
    writers.write_config(workdir, config, agent=config.agent, **config_record)
    return writer
