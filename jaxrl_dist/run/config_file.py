"""A run's ``config.json``: its one writer (``write``) and its one reader (``load``).

config.json holds the resolved config's fields, ``agent`` and the run's settings
(``seed``, ``num_seeds``, the acting path's layout, backend). Every use reads it through
``load``: ``read`` (a finished run, for ``load_policy``), ``check_resume`` (``--resume``
before anything is written or compiled) and the command line's ``--config=PATH``
(``cli.config_flags``); each says in its own words what is wrong with the file.
"""

import dataclasses
import json
import os
from typing import Any

from jaxrl_dist import agents, errors
from jaxrl_dist.run import writers

NAME = "config.json"


class Unreadable(Exception):
    """``load`` could not read a run's config.json. ``str(e)`` is ``"<Type>: <detail>"``
    (e.g. ``JSONDecodeError: Expecting value: line 1 column 1 (char 0)``);
    ``not_a_run``: the file is JSON, but not an object naming an agent and an env."""

    def __init__(self, reason: str, not_a_run: bool = False):
        super().__init__(reason)
        self.not_a_run = not_a_run


def record(config: Any, **extra: Any) -> dict[str, Any]:
    """config.json's object: ``config``'s fields (a dataclass) and ``extra``, JSON-able
    (tuples as lists, non-finite floats as ``None``)."""
    values = dict(dataclasses.asdict(config), **extra)
    return {k: writers.jsonable(v) for k, v in values.items()}


def write(workdir: str, config: Any, **extra: Any) -> str:
    """Writes ``record(config, **extra)`` to ``<workdir>/config.json``; returns its path."""
    path = os.path.join(workdir, NAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record(config, **extra), f, indent=2, sort_keys=True)
    return path


def load(path: str) -> dict[str, Any]:
    """The JSON object in ``path``, a run's config.json.

    Raises:
      FileNotFoundError: nothing is at ``path``.
      Unreadable: it cannot be read (another ``OSError``, not UTF-8, not JSON), or it is
        not a JSON object with ``agent`` and ``env`` strings (``not_a_run``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Unreadable(f"{type(e).__name__}: {e}") from None
    if not isinstance(saved, dict):
        raise Unreadable(f"ValueError: a JSON {type(saved).__name__}, not an object", True)
    for name in ("agent", "env"):
        if not isinstance(saved.get(name), str):
            raise Unreadable(f"ValueError: no {name!r} entry", True)
    return saved


def read(workdir: str) -> dict[str, Any]:
    """``<workdir>/config.json`` of a run (``load``).

    Raises:
      ConfigError: ``workdir`` or its config.json is missing (``--workdir=... does not
        exist (or is not a directory)``, ``--workdir=... holds no run (... is
        missing)``), or config.json is damaged (``<path> is damaged (<Type>: ...)``).
    """
    if not os.path.isdir(workdir):
        raise errors.ConfigError(f"--workdir={workdir} does not exist (or is not a directory)")
    path = os.path.join(workdir, NAME)
    try:
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return load(path)
    except FileNotFoundError:
        raise errors.ConfigError(f"--workdir={workdir} holds no run ({path} is missing)") from None
    except Unreadable as e:
        raise errors.ConfigError(f"{path} is damaged ({e})") from None


def check_resume(workdir: str, config: Any, seed: int, num_seeds: int) -> None:
    """Raises ConfigError unless ``workdir`` holds a run of this config (as the acting
    path runs it), ``seed`` and ``num_seeds``. How it compiled does not matter: a run
    resumes under any tier or backend.

    Raises:
      ConfigError: no config.json (``--resume: <workdir> holds no run (no
        config.json)``), a damaged one, or the first entry that differs (``--resume:
        the run in <workdir> has lr=0.00025, the flags give 0.1; ...``).
    """
    path = os.path.join(workdir, NAME)
    try:
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        saved = load(path)
    except FileNotFoundError:
        raise errors.ConfigError(f"--resume: {workdir} holds no run (no config.json)") from None
    except Unreadable as e:
        raise errors.ConfigError(
            f"--resume: {path} is damaged ({e}); restore it from a copy, or start a new "
            "run in another --workdir"
        ) from None
    now = record(config, agent=config.agent, seed=seed, num_seeds=num_seeds)
    for name, value in now.items():
        if saved.get(name) != value:
            raise errors.ConfigError(
                f"--resume: the run in {workdir} has {name}={saved.get(name)!r}, "
                f"the flags give {value!r}; resume with the same settings"
            )


def config_from_record(saved: dict[str, Any], path: str = NAME):
    """The agent's config rebuilt from a config.json object (``load``): its agent's
    per-env defaults (``agents.default_config``) with every config field it holds (JSON
    lists back to tuples; run settings such as ``seed`` ignored), validated for one
    device.

    Raises:
      ConfigError: an unknown agent, or fields the agent's config refuses (``path``
        names the file in the message).
    """
    agent, env = saved["agent"], saved["env"]
    if agent not in agents.AGENTS:
        raise errors.ConfigError(
            f"{path} names agent {agent!r}, not one of {', '.join(agents.AGENTS)}"
        )
    fields = {f.name for f in dataclasses.fields(agents.default_config(agent, env))}
    values = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in saved.items() if name in fields - {"env"}
    }
    try:
        return agents.default_config(agent, env, **values).validate(1)
    except (errors.ConfigError, TypeError, ValueError) as e:
        raise errors.ConfigError(f"{path} holds a config that does not build: {e}") from None
