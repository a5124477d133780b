"""Agents: each has a validated config and pure functions, composed by the acting paths.

The registry maps ``--agent`` names to their packages; each package has
``config.py`` (a frozen config and ``default_config(env, **overrides)``) and
``agent.py`` (``Agent(config, spec, num_devices, tuning_)``: the agent's networks and
pure functions). ``anakin.on_device`` composes them into the on-device update,
``sebulba`` into host actors and a learner. The rules of which agent runs where live
here, once (``check_on_device``, ``check_host``).
"""

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
