"""IMPALA configuration: a frozen dataclass validated before anything compiles."""

import dataclasses
from typing import ClassVar

from jaxrl_dist import errors
from jaxrl_dist.agents import common


@dataclasses.dataclass(frozen=True)
class ImpalaConfig(common.OnDeviceConfig):
    """Hyperparameters of an IMPALA run on device.

    One update: every env acts ``rollout_len`` steps with the *behaviour* policy,
    the learner's parameters of ``policy_lag`` updates ago (0: on-policy), then
    one gradient step on the V-trace actor-critic loss. The clipping thresholds
    are ρ̄, c̄ and ρ̄_pg of the paper (sec. 4.1-4.2), ``vtrace_lambda`` its λ.
    ``num_epochs`` × ``num_minibatches`` > 1 reuses each rollout for several
    gradient steps (minibatches are groups of envs); the policy then drifts from
    μ within an update as well, which V-trace corrects like any other lag.
    """

    agent: ClassVar[str] = "impala"
    HELP: ClassVar[dict[str, str]] = {
        "policy_lag": "On device: updates by which the behaviour policy lags (0: on-policy).",
        "num_epochs": "Passes over each rollout (1: the paper's single step).",
        "num_minibatches": "Env groups per pass; V-trace corrects for the drift.",
        "clip_rho_threshold": "V-trace's rho-bar (importance weights of the targets).",
        "clip_c_threshold": "V-trace's c-bar (trace cutting).",
        "clip_pg_rho_threshold": "V-trace's rho-bar of the policy-gradient advantages.",
        "vtrace_lambda": "V-trace's lambda.",
    }

    num_envs: int = 16
    rollout_len: int = 20
    total_steps: int = 1_000_000
    lr: float = 1.5e-3
    optimizer: str = "rmsprop"
    policy_lag: int = 1
    num_epochs: int = 1  # passes over each rollout (1: the paper's single step)
    num_minibatches: int = 1  # env groups per pass; V-trace corrects for the drift
    clip_rho_threshold: float = 1.0
    clip_c_threshold: float = 1.0
    clip_pg_rho_threshold: float = 1.0
    vtrace_lambda: float = 1.0

    def validate(self, num_devices: int = 1) -> "ImpalaConfig":
        """Checks every value; returns self.

        Raises:
          ConfigError: with a one-line message naming the flag and what is allowed.
        """
        super().validate(num_devices)
        if not isinstance(self.policy_lag, int) or self.policy_lag < 0:
            raise errors.ConfigError(
                f"--policy_lag must be an integer >= 0, got {self.policy_lag!r}"
            )
        common.check_positive_ints(self, "num_epochs", "num_minibatches")
        if (self.num_envs // num_devices) % self.num_minibatches:
            raise errors.ConfigError(
                f"--num_minibatches={self.num_minibatches} must divide the "
                f"{self.num_envs // num_devices} envs per device"
            )
        common.check_positive_floats(
            self, "clip_rho_threshold", "clip_c_threshold", "clip_pg_rho_threshold"
        )
        common.check_unit_interval(self, "vtrace_lambda")
        return self


_CLASSIC = dict(num_envs=16, rollout_len=20, total_steps=1_000_000, lr=1.5e-3)
# MinAtar: two passes over each rollout in 8 groups of envs (16 Adam steps per
# rollout). The paper's single RMSProp step per rollout stalls on Breakout-MinAtar
# at a return of ~5.5 with this MLP (README, "IMPALA on Breakout-MinAtar").
_MINATAR = dict(
    num_envs=64, rollout_len=20, total_steps=10_000_000, optimizer="adam", lr=2.5e-4,
    gamma=0.999, ent_coef=0.02, num_epochs=2, num_minibatches=8, hidden_sizes=(256, 256),
    activation="relu",
)
ENV_DEFAULTS: dict[str, dict] = {
    **{env: _CLASSIC for env in common.CLASSIC_ENVS + common.CONTINUOUS_ENVS},
    **{env: _MINATAR for env in common.MINATAR_ENVS},
    # Espeholt et al. 2018, Table G.1 (Atari): 20 steps, RMSProp 6e-4 (eps 0.01)
    # annealed, entropy 0.01, gradient norm 40, rewards clipped to [-1, 1]; the Nature
    # torso (--torso=impala: the paper's deep network).
    common.ATARI: dict(
        rollout_len=20, total_steps=10_000_000, optimizer="rmsprop", lr=6e-4, opt_eps=0.01,
        ent_coef=0.01, max_grad_norm=40.0, torso="nature", hidden_sizes=(),
        activation="relu", reward_clip=1.0,
    ),
}


def default_config(env: str, **overrides) -> ImpalaConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    return common.make_default_config(ImpalaConfig, ENV_DEFAULTS, env, **overrides)
