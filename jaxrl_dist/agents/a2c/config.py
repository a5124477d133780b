"""A2C configuration: a frozen dataclass validated before anything compiles."""

import dataclasses
from typing import ClassVar

from jaxrl_dist.agents import common


@dataclasses.dataclass(frozen=True)
class A2CConfig(common.OnDeviceConfig):
    """Hyperparameters of an A2C run (A3C's algorithm, synchronous, on device).

    One update: every env acts ``rollout_len`` (A3C's ``t_max``, default 5) steps,
    then one gradient step on the n-step actor-critic loss over all of them.
    ``gae_lambda = 1`` gives A3C's n-step returns (each step bootstraps from the
    value at the end of its rollout); ``< 1`` gives GAE(λ) targets.
    """

    agent: ClassVar[str] = "a2c"
    HELP: ClassVar[dict[str, str]] = {
        "gae_lambda": "1: A3C's n-step returns; < 1: GAE(lambda) targets.",
    }

    num_envs: int = 16
    rollout_len: int = 5
    total_steps: int = 1_000_000
    lr: float = 7e-4
    optimizer: str = "rmsprop"
    gae_lambda: float = 1.0

    def validate(self, num_devices: int = 1) -> "A2CConfig":
        """Checks every value; returns self.

        Raises:
          ConfigError: with a one-line message naming the flag and what is allowed.
        """
        super().validate(num_devices)
        common.check_unit_interval(self, "gae_lambda")
        return self


_CLASSIC = dict(num_envs=16, rollout_len=5, total_steps=1_000_000, lr=7e-4)
_MINATAR = dict(
    num_envs=64, rollout_len=5, total_steps=10_000_000, lr=7e-4, hidden_sizes=(256, 256),
    activation="relu",
)
ENV_DEFAULTS: dict[str, dict] = {
    **{env: _CLASSIC for env in common.CLASSIC_ENVS + common.CONTINUOUS_ENVS},
    **{env: _MINATAR for env in common.MINATAR_ENVS},
    # Mnih et al. 2016 (Atari): t_max 5, RMSProp 7e-4, entropy 0.01, rewards clipped.
    common.ATARI: dict(
        rollout_len=5, total_steps=10_000_000, lr=7e-4, torso="nature", hidden_sizes=(),
        activation="relu", reward_clip=1.0,
    ),
}


def default_config(env: str, **overrides) -> A2CConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    return common.make_default_config(A2CConfig, ENV_DEFAULTS, env, **overrides)
