"""PPO configuration: a frozen dataclass validated before anything compiles."""

import dataclasses
import math
from typing import ClassVar

from jaxrl_dist import errors
from jaxrl_dist.agents import common

OBJECTIVES = ("clip", "kl")


@dataclasses.dataclass(frozen=True)
class PPOConfig(common.OnDeviceConfig):
    """Hyperparameters of a PPO run. Units: steps are environment steps.

    ``num_envs`` is the *global* number of environments, split evenly across
    devices. One update collects ``num_envs * rollout_len`` env steps and runs
    ``num_epochs`` epochs of ``num_minibatches`` minibatches over them.
    """

    agent: ClassVar[str] = "ppo"
    HELP: ClassVar[dict[str, str]] = {
        "num_epochs": "Passes over each rollout.",
        "num_minibatches": "Minibatches per pass.",
        "gae_lambda": "GAE's lambda.",
        "objective": "clip (eq. 7) or kl (eq. 8, adaptive beta).",
        "clip_eps": "Clipping epsilon of the policy (and value) loss.",
        "kl_target": "--objective=kl: the KL target d_targ.",
        "kl_beta_init": "--objective=kl: the initial KL penalty beta.",
        "clip_value": "Clip the value loss around the behaviour values.",
    }

    num_epochs: int = 4
    num_minibatches: int = 4
    gae_lambda: float = 0.95
    objective: str = "clip"  # "clip" (eq. 7) or "kl" (eq. 8, adaptive β)
    clip_eps: float = 0.2
    kl_target: float = 0.01
    kl_beta_init: float = 1.0
    clip_value: bool = True
    normalize_advantages: bool = True

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
        super().validate(num_devices)
        common.check_positive_ints(self, "num_epochs", "num_minibatches")
        common.check_positive_floats(self, "clip_eps", "kl_target")
        common.check_unit_interval(self, "gae_lambda")
        common.check_non_negative(self, "kl_beta_init")
        common.check_choice(self, "objective", OBJECTIVES)
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
# CartPole on device: 32 envs x 64 steps (2,048 per update, minibatches of 512) with
# Adam 1e-3 instead of PureJaxRL's 4 x 128 with 2.5e-4: every seed measured solved it
# at 5e5 steps, at higher env steps/s (docs/benchmarks/defaults.md).
_CARTPOLE = dict(num_envs=32, rollout_len=64, total_steps=500_000, lr=1e-3)
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
    **{env: _CLASSIC for env in common.CLASSIC_ENVS},
    "CartPole-v1": _CARTPOLE,
    # Host actors keep the config their learning test is tuned on (tests/test_host_actors.py).
    "gymnasium:CartPole-v1": _CLASSIC,
    "MountainCar-v0": dict(_CLASSIC, total_steps=1_000_000),
    **{env: _CONTINUOUS for env in common.CONTINUOUS_ENVS},
    **{env: _MINATAR for env in common.MINATAR_ENVS},
    # gymnax-blines' agents/Breakout-MinAtar/ppo.yaml (the figure gymnax reports):
    # gamma 0.999 and a constant Adam 5e-4 (its lr_begin = lr_end); the rest is
    # _MINATAR (64 x 128, 4 epochs x 8 minibatches, clip 0.2, lambda 0.95,
    # entropy 0.01, separate 256-256 ReLU MLPs). docs/benchmarks/learning.md.
    "Breakout-MinAtar": dict(_MINATAR, gamma=0.999, anneal_lr=False),
    # Schulman et al. 2017, Table 5 (Atari), as CleanRL's ppo_atari: 128 steps, 4
    # epochs x 4 minibatches, clip 0.1, lr 2.5e-4 annealed, the Nature torso.
    common.ATARI: dict(
        rollout_len=128, total_steps=10_000_000, num_epochs=4, num_minibatches=4,
        clip_eps=0.1, ent_coef=0.01, lr=2.5e-4, torso="nature", hidden_sizes=(),
        activation="relu", reward_clip=1.0,
    ),
}


def default_config(env: str, **overrides) -> PPOConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    return common.make_default_config(PPOConfig, ENV_DEFAULTS, env, **overrides)
