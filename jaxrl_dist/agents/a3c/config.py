"""A3C configuration: A2C's hyperparameters, run by gradient workers (Ray actors)."""

import dataclasses
from typing import ClassVar

from jaxrl_dist.agents import common
from jaxrl_dist.agents.a2c import config as a2c_config


@dataclasses.dataclass(frozen=True)
class A3CConfig(a2c_config.A2CConfig):
    """Hyperparameters of an A3C run (Mnih et al. 2016, Algorithm S3).

    Each worker acts ``rollout_len`` (``t_max``) steps in its ``num_envs`` envs (on the
    host path: ``--envs_per_thread``) with the parameters it last fetched, computes the
    n-step actor-critic gradient of that rollout and sends it; the parameter server
    applies every gradient in arrival order. One update is one worker's gradient, so
    ``num_updates = total_steps / (rollout_len * num_envs)``.
    """

    agent: ClassVar[str] = "a3c"


ENV_DEFAULTS: dict[str, dict] = {
    env: dict(values, num_envs=8) for env, values in a2c_config.ENV_DEFAULTS.items()
}


def default_config(env: str, **overrides) -> A3CConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    return common.make_default_config(A3CConfig, ENV_DEFAULTS, env, **overrides)
