"""Agents: each has a validated config and pure functions, composed by the acting paths.

The registry maps ``--agent`` names to their packages; each package has
``config.py`` (a frozen config and ``default_config(env, **overrides)``) and
``agent.py`` (``Agent(config, spec, num_devices, tuning_)``: the agent's networks and
pure functions). ``anakin.on_device`` composes them into the on-device update,
``sebulba`` into host actors and a learner. The rules of which agent runs where live
here, once: which agent acts in which env (``check_env_and_agent``, ``checked_config``)
and which agent runs on which acting path (``check_on_device``, ``check_host``,
``check_host_only``, ``check_host_seeds``).
"""

import dataclasses
import importlib
from typing import NamedTuple

from jaxrl_dist import errors


class AgentSpec(NamedTuple):
    title: str  # for plots and tables
    package: str
    action_spaces: tuple[str, ...]  # gymnax space class names it can act in
    needs_workers: bool = False  # learns only from asynchronous workers (Ray actors)


AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec("PPO", "jaxrl_dist.agents.ppo", ("Discrete", "Box")),
    "impala": AgentSpec("IMPALA", "jaxrl_dist.agents.impala", ("Discrete", "Box")),
    "a2c": AgentSpec("A2C", "jaxrl_dist.agents.a2c", ("Discrete", "Box")),
    "a3c": AgentSpec("A3C", "jaxrl_dist.agents.a3c", ("Discrete", "Box"), needs_workers=True),
    "apex": AgentSpec("Ape-X DQN", "jaxrl_dist.agents.apex", ("Discrete",)),
}

NEEDS_WORKERS = (
    "--agent={agent} needs gradient workers: --env=gymnasium:<id> with --ray_actors=N "
    "(the synchronous on-device variant is --agent=a2c)"
)
NOT_DETERMINISTIC = (
    "--deterministic does not apply to --agent={agent}: its workers' gradients are "
    "applied in arrival order"
)


def config_module(agent: str):
    """The ``config`` module of ``agent`` (a key of ``AGENTS``)."""
    return importlib.import_module(AGENTS[agent].package + ".config")


def default_config(agent: str, env: str, **overrides):
    """``agent``'s per-env default config for ``env`` with ``overrides`` (``None`` ignored)."""
    return config_module(agent).default_config(env, **overrides)


def check_env_and_agent(agent: str, env: str) -> tuple[int, ...]:
    """The env's observation shape (one env built to read its spaces).

    ``env`` is a gymnax id, or ``gymnasium:<id>`` (``gymnasium:<module>:<id>``,
    ``envpool:<Game>-v5``) for host actors.

    Raises:
      ConfigError: an unknown agent or env, an env that cannot be built or whose
        observations are not a Box (gymnax), or an agent that cannot act in its
        action space.
    """
    if agent not in AGENTS:
        raise errors.ConfigError(f"--agent must be one of {', '.join(AGENTS)}, got {agent!r}")
    from jaxrl_dist.envs import gymnasium_env

    if gymnasium_env.is_gymnasium(env):
        spec = gymnasium_env.make_spec(env)
        action_space, obs_shape = type(spec.action_space).__name__, spec.obs_shape
    else:
        action_space, obs_shape = _gymnax_spaces(env)
    if action_space not in AGENTS[agent].action_spaces:
        raise errors.ConfigError(
            f"--agent={agent} acts in {' or '.join(AGENTS[agent].action_spaces)} action spaces; "
            f"--env={env} has {action_space}"
        )
    return obs_shape


def _gymnax_spaces(env_id: str) -> tuple[str, tuple[int, ...]]:
    from jaxrl_dist.envs import gymnax_env

    gymnax_env.check_env_id(env_id)
    try:
        env, params = gymnax_env.make(env_id)
        action_space = type(env.action_space(params)).__name__
        obs_space = type(env.observation_space(params)).__name__
        obs_shape = tuple(env.observation_space(params).shape)
    except Exception as e:  # noqa: BLE001 - any failure to build the env is bad input
        raise errors.ConfigError(f"--env={env_id} could not be created: {e}") from None
    if obs_space != "Box":
        raise errors.ConfigError(
            f"--env={env_id} has a {obs_space} observation space; only Box is supported"
        )
    return action_space, obs_shape


def checked_config(agent: str, env: str, overrides: dict,
                   obs_shape: tuple[int, ...] | None = None):
    """``agent``'s per-env default config for ``env`` with ``overrides`` (config field
    values; ``None`` leaves the default), checked against the env; not yet validated
    (``config.validate(num_devices)``: the acting path knows its devices).

    ``obs_shape``: the env's observation shape as ``check_env_and_agent`` returned it
    (``None``: that check is made here).

    Raises:
      ConfigError: what ``check_env_and_agent`` refuses, an override that is no field
        of the agent's config, or a torso that cannot take the env's observations
        (``common.check_torso_fits``).
    """
    from jaxrl_dist.agents import common

    if obs_shape is None:
        obs_shape = check_env_and_agent(agent, env)
    fields = {f.name for f in dataclasses.fields(default_config(agent, env))}
    for name in overrides:
        if name not in fields:
            raise errors.ConfigError(f"--{name} does not apply to --agent={agent}")
    config = default_config(agent, env, **overrides)
    common.check_torso_fits(config.torso, obs_shape, env)
    return config


def make_agent(config, spec, num_devices: int = 1, tuning_=None):
    """The ``base.Agent`` of ``config.agent`` for an env of ``spec`` (``obs_shape``,
    ``action_space``, ``action_dim``) and a mesh of ``num_devices`` devices."""
    module = importlib.import_module(AGENTS[config.agent].package + ".agent")
    return module.Agent(config, spec, num_devices, tuning_)


def check_on_device(agent: str) -> None:
    """Raises ``ConfigError`` (``NEEDS_WORKERS``) if ``agent`` has no on-device path."""
    if AGENTS[agent].needs_workers:
        raise errors.ConfigError(NEEDS_WORKERS.format(agent=agent))


def check_host(agent: str, ray_actors: int | None, deterministic: bool) -> None:
    """Raises ``ConfigError`` if ``agent`` cannot run on host actors so laid out: an
    agent that needs workers needs ``ray_actors`` and is not deterministic."""
    if AGENTS[agent].needs_workers:
        if not ray_actors:
            raise errors.ConfigError(NEEDS_WORKERS.format(agent=agent))
        if deterministic:
            raise errors.ConfigError(NOT_DETERMINISTIC.format(agent=agent))


def check_host_only(env: str, names) -> None:
    """Raises ``ConfigError`` naming the first of ``names`` (host-actor settings that are
    given) unless ``env`` is a Gymnasium env (``gymnasium:<id>``): on device they do not
    apply."""
    from jaxrl_dist.envs import gymnasium_env

    names = list(names)
    if names and not gymnasium_env.is_gymnasium(env):
        raise errors.ConfigError(
            f"--{names[0]} applies only to host actors (--env=gymnasium:<id>)"
        )


def check_host_seeds(env: str, num_seeds: int) -> None:
    """Raises ``ConfigError`` unless ``num_seeds`` is 1: host actors (``env``, a
    Gymnasium env) run one seed."""
    if num_seeds != 1:
        raise errors.ConfigError(
            f"--num_seeds must be 1 with host actors (--env={env}), got {num_seeds}"
        )
