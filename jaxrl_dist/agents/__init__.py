"""Agents: each has a validated config and a learner with one compiled update step.

The registry maps ``--agent`` names to their packages; each package has
``config.py`` (a frozen config and ``default_config(env, **overrides)``) and
``learner.py`` (``Agent(config, spec, num_devices, tuning_)``, the agent's pure
functions, and ``Learner(config, mesh, num_seeds, env_params)``, the agent on
on-device gymnax envs).
"""

import importlib
from typing import NamedTuple


class AgentSpec(NamedTuple):
    title: str  # for plots and tables
    package: str
    action_spaces: tuple[str, ...]  # gymnax space class names it can act in


AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec("PPO", "jaxrl_dist.agents.ppo", ("Discrete", "Box")),
    "impala": AgentSpec("IMPALA", "jaxrl_dist.agents.impala", ("Discrete", "Box")),
    "a2c": AgentSpec("A2C", "jaxrl_dist.agents.a2c", ("Discrete", "Box")),
    "a3c": AgentSpec("A3C", "jaxrl_dist.agents.a3c", ("Discrete", "Box")),
    "apex": AgentSpec("Ape-X DQN", "jaxrl_dist.agents.apex", ("Discrete",)),
}


def config_module(agent: str):
    """The ``config`` module of ``agent`` (a key of ``AGENTS``)."""
    return importlib.import_module(AGENTS[agent].package + ".config")


def default_config(agent: str, env: str, **overrides):
    """``agent``'s per-env default config for ``env`` with ``overrides`` (``None`` ignored)."""
    return config_module(agent).default_config(env, **overrides)


def _learner_module(agent: str):
    return importlib.import_module(AGENTS[agent].package + ".learner")


def make_learner(config, mesh, num_seeds: int = 1, env_params=None, tuning_=None):
    """The on-device learner of ``config.agent`` for ``config`` on ``mesh``
    (``agents.on_device.OnDeviceLearner``'s arguments)."""
    return _learner_module(config.agent).Learner(config, mesh, num_seeds, env_params, tuning_)


def make_agent(config, spec, num_devices: int = 1, tuning_=None):
    """The ``base.Agent`` of ``config.agent`` for an env of ``spec`` (``obs_shape``,
    ``action_space``, ``action_dim``) and a mesh of ``num_devices`` devices."""
    return _learner_module(config.agent).Agent(config, spec, num_devices, tuning_)
