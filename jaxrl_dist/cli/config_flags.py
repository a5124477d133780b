"""Command-line flags made from the agents' config dataclasses, and ``--config`` files.

Every field of every agent's config (``agents/<agent>/config.py``) is a flag of the
same name, generated here from the dataclasses: its kind from the field's type
(``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]`` as a comma-separated list)
and its help from the config classes' ``HELP``. An unset flag (``None``) leaves the
per-agent, per-env default. Values are checked by the config's own ``validate``, so a
flag and the Python API refuse the same values with the same one-line message.

``--config=PATH`` takes a finished run's ``config.json`` (``run/config_file.py`` writes
and reads it) and sets every flag it names that the command line does not give, so the run is
made again exactly (same ``params_sha256`` on the same platform).
"""

import dataclasses
import typing
from typing import Any, NamedTuple

from jaxrl_dist import errors
from jaxrl_dist.agents import AGENTS

KINDS = {int: "int", float: "float", bool: "bool", str: "str"}
# Run settings (``run.settings.RunSettings``) a config.json holds, by their flag names.
SETTINGS = ("seed", "num_seeds", "num_devices", "eval_episodes", "log_points",
            "checkpoint_every", "chunk_compile", "eval_every")
HOST_PREFIX = "host_"  # config.json's host-actor layout fields: host_<flag name>
ON_DEVICE_ONLY = ("num_envs", "policy_lag", "num_devices", "chunk_compile")


class FieldFlag(NamedTuple):
    """One config field as a flag."""

    name: str
    kind: str  # int | float | bool | str | ints
    agents: tuple[str, ...]  # the agents whose config has the field
    help: str


def _config_class(agent: str) -> type:
    return type(_default(agent))


def _default(agent: str):
    from jaxrl_dist import agents

    return agents.default_config(agent, "CartPole-v1")


def _kind(hint: Any, name: str) -> str:
    if hint in KINDS:
        return KINDS[hint]
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is int:
        return "ints"
    raise TypeError(f"config field {name} has a type no flag is made for: {hint}")


def _help(cls: type, name: str) -> str:
    for klass in cls.__mro__:
        text = vars(klass).get("HELP", {}).get(name)
        if text:
            return text
    raise KeyError(f"{cls.__name__}.HELP documents no field {name!r}")


def fields() -> dict[str, FieldFlag]:
    """Every config field of every agent but ``env`` (a flag of its own), by name.

    Raises:
      TypeError, KeyError: a field of a type no flag is made for, or without help.
    """
    found: dict[str, FieldFlag] = {}
    for agent in AGENTS:
        cls = _config_class(agent)
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name == "env":
                continue
            seen = found.get(field.name)
            agents = (*seen.agents, agent) if seen else (agent,)
            found[field.name] = FieldFlag(
                field.name, _kind(hints[field.name], field.name), agents,
                seen.help if seen else _help(cls, field.name),
            )
    return found


def help_text(flag: FieldFlag) -> str:
    """The flag's ``--help`` line: meaning, agents (unless all), where defaults are."""
    which = "" if len(flag.agents) == len(AGENTS) else f"{', '.join(flag.agents)}: "
    return (f"{which}{flag.help} Default: per agent and env "
            "(see them with --agent=A --env=E --print_config).")


def value(flag: FieldFlag, raw: Any) -> Any:
    """A set flag's value as the config field takes it (``ints``: a tuple of ints).

    Raises:
      ConfigError: a list element that is not an integer.
    """
    if flag.kind != "ints":
        return raw
    try:
        return tuple(int(v) for v in raw)
    except (TypeError, ValueError):
        raise errors.ConfigError(
            f"--{flag.name} must be comma-separated integers, got {','.join(map(str, raw))!r}"
        ) from None


def read_config_file(path: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's config.json, read by ``run.config_file.load``).

    Raises:
      ConfigError: missing, unreadable, not JSON, or not an object with ``agent`` and
        ``env`` (one line naming ``--config=path``).
    """
    from jaxrl_dist.run import config_file

    try:
        return config_file.load(path)
    except FileNotFoundError:
        raise errors.ConfigError(f"--config={path} does not exist") from None
    except config_file.Unreadable as e:
        if e.not_a_run:
            raise errors.ConfigError(
                f"--config={path} is not a run's config.json (a JSON object with agent, env "
                "and the config's fields)"
            ) from None
        raise errors.ConfigError(f"--config={path} cannot be read as JSON ({e})") from None


def file_values(saved: dict[str, Any], flag_names: set[str]) -> dict[str, Any]:
    """The flag values a config.json gives: ``agent``, ``env``, the config's fields, the
    run settings and the host-actor layout (``host_<flag>``), for flags in
    ``flag_names``. Fields the acting path derives (host actors: ``num_envs``,
    ``policy_lag``) and ``None`` values are left out."""
    host = saved.get("acting") == "host"
    values = {"agent": saved["agent"], "env": saved["env"]}
    for name in (*fields(), *SETTINGS):
        if name in saved and saved[name] is not None and not (host and name in ON_DEVICE_ONLY):
            values[name] = saved[name]
    for key, raw in saved.items():
        if host and key.startswith(HOST_PREFIX) and raw is not None:
            values[key[len(HOST_PREFIX):]] = raw
    return {k: v for k, v in values.items() if k in flag_names}
