"""PPO configuration: a frozen dataclass validated before anything compiles."""

import dataclasses
import math

from jaxrl_dist import errors

OBJECTIVES = ("clip", "kl")
ACTIVATIONS = ("tanh", "relu")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of a PPO run. Units: steps are environment steps.

    ``num_envs`` is the *global* number of environments, split evenly across
    devices. One update collects ``num_envs * rollout_len`` env steps and runs
    ``num_epochs`` epochs of ``num_minibatches`` minibatches over them.
    """

    env: str = "CartPole-v1"
    num_envs: int = 4
    rollout_len: int = 128
    total_steps: int = 500_000
    num_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    objective: str = "clip"  # "clip" (eq. 7) or "kl" (eq. 8, adaptive β)
    clip_eps: float = 0.2
    kl_target: float = 0.01
    kl_beta_init: float = 1.0
    vf_coef: float = 0.5
    clip_value: bool = True
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_len

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update

    def minibatch_layout(self) -> tuple[int, int]:
        """``(time_chunks, env_groups)`` with product ``num_minibatches``.

        A minibatch takes ``rollout_len / time_chunks`` (shuffled) steps from each
        env of one group of ``num_envs / env_groups`` envs; this layout does not
        depend on how envs are split across devices.
        """
        time_chunks = math.gcd(self.rollout_len, self.num_minibatches)
        return time_chunks, self.num_minibatches // time_chunks

    def validate(self, num_devices: int = 1) -> "PPOConfig":
        """Checks every value; returns self.

        Raises:
          ConfigError: with a one-line message naming the flag and what is allowed.
        """
        positive_ints = ("num_envs", "rollout_len", "total_steps", "num_epochs", "num_minibatches")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise errors.ConfigError(f"--{name} must be a positive integer, got {value!r}")
        positive_floats = ("lr", "clip_eps", "kl_target")
        for name in positive_floats:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise errors.ConfigError(f"--{name} must be > 0, got {value!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise errors.ConfigError(f"--{name} must be in [0, 1], got {value!r}")
        for name in ("vf_coef", "ent_coef", "max_grad_norm", "kl_beta_init"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise errors.ConfigError(f"--{name} must be >= 0, got {value!r}")
        if self.objective not in OBJECTIVES:
            raise errors.ConfigError(
                f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise errors.ConfigError(
                f"--activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise errors.ConfigError(
                f"--hidden_sizes must be positive integers, got {self.hidden_sizes!r}"
            )
        if self.num_envs % num_devices:
            raise errors.ConfigError(
                f"--num_envs must be divisible by the number of devices ({num_devices}), "
                f"got {self.num_envs}"
            )
        if self.num_updates < 1:
            raise errors.ConfigError(
                f"--total_steps must be >= num_envs * rollout_len = {self.steps_per_update}, "
                f"got {self.total_steps}"
            )
        _, env_groups = self.minibatch_layout()
        local_envs = self.num_envs // num_devices
        if local_envs % env_groups:
            raise errors.ConfigError(
                f"--num_minibatches={self.num_minibatches} does not divide the batch of "
                f"{self.rollout_len} steps x {local_envs} envs per device: it must be "
                f"t*g with t dividing --rollout_len and g dividing num_envs/devices"
            )
        return self


# Per-environment defaults that train well; flags override them.
_CLASSIC = dict(num_envs=4, rollout_len=128, total_steps=500_000, lr=2.5e-4)
_MINATAR = dict(
    num_envs=64,
    rollout_len=128,
    total_steps=10_000_000,
    num_minibatches=8,
    lr=5e-4,
    hidden_sizes=(256, 256),
    activation="relu",
)
_CONTINUOUS = dict(
    num_envs=16,
    rollout_len=256,
    total_steps=1_000_000,
    num_epochs=10,
    num_minibatches=16,
    lr=3e-4,
    ent_coef=0.0,
)
ENV_DEFAULTS: dict[str, dict] = {
    "CartPole-v1": _CLASSIC,
    "Acrobot-v1": _CLASSIC,
    "MountainCar-v0": dict(_CLASSIC, total_steps=1_000_000),
    "Pendulum-v1": _CONTINUOUS,
    "MountainCarContinuous-v0": _CONTINUOUS,
    "Asterix-MinAtar": _MINATAR,
    "Breakout-MinAtar": _MINATAR,
    "Freeway-MinAtar": _MINATAR,
    "SpaceInvaders-MinAtar": _MINATAR,
    "Seaquest-MinAtar": _MINATAR,
}


def default_config(env: str, **overrides) -> PPOConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    values = dict(ENV_DEFAULTS.get(env, _CLASSIC), env=env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PPOConfig(**values)
