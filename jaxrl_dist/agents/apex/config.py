"""Ape-X DQN configuration: a frozen dataclass validated before anything compiles."""

import dataclasses
from typing import Any, ClassVar

import numpy as np

from jaxrl_dist import errors
from jaxrl_dist.agents import common

OBS_STORAGE = ("float32", "uint8")
FRAME_STACK_REPLAY = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class ApexConfig(common.OnDeviceConfig):
    """Hyperparameters of an Ape-X DQN run (Horgan et al. 2018, arXiv 1803.00933).

    One update: every env acts ``rollout_len`` steps ε-greedily (env ``i`` of
    ``N`` with ``ε_i = epsilon^(1 + epsilon_alpha·i/(N−1))``); the actors' n-step
    transitions enter the prioritized replay with priorities from their own TD
    errors; then the learner takes ``learner_steps`` gradient steps, each on a
    prioritized batch of ``batch_size`` transitions. The replay ratio is
    ``learner_steps * batch_size / (num_envs * rollout_len)`` sampled transitions
    per env step.

    Units: ``buffer_capacity``, ``learning_starts`` in transitions (= env steps);
    ``target_update_period`` in learner steps. ``buffer_capacity`` and
    ``batch_size`` are global: each device holds and samples its share.
    ``obs_storage="uint8"`` stores observations as bytes (MinAtar's are 0/1).
    ``frame_stack_replay`` stores each frame of stacked-frame observations once
    (``replay.frame_stack``; ``frame_replay_on`` decides "auto").
    """

    agent: ClassVar[str] = "apex"
    HELP: ClassVar[dict[str, str]] = {
        "n_step": "Steps of the n-step return.",
        "dueling": "Dueling Q-network heads.",
        "buffer_capacity": "Replay capacity in transitions, over all devices.",
        "batch_size": "Transitions per learner step (global).",
        "learner_steps": "Learner steps per update (sets the replay ratio).",
        "learning_starts": "Transitions in the replay before learning starts.",
        "target_update_period": "Learner steps between target-network refreshes.",
        "epsilon": "Base of the actors' epsilon ladder.",
        "epsilon_alpha": "Exponent spread of the epsilon ladder.",
        "priority_alpha": "Prioritization exponent alpha.",
        "priority_beta": "Importance-sampling exponent beta at the start.",
        "priority_beta_end": "beta at the end (annealed linearly).",
        "priority_eps": "Added to |TD error| so that no transition becomes unsampleable.",
        "obs_storage": "float32, or uint8 (observations stored as bytes; MinAtar's are 0/1).",
        "frame_stack_replay": "auto, on or off: the replay stores each frame of stacked-frame "
                              "observations once (uint8 [H, W, C] with C > 1 frames, e.g. "
                              "Atari's [84, 84, 4]) and rebuilds obs and next_obs when "
                              "sampling (about one frame per transition instead of 2C); auto "
                              "= on for uint8 [H, W, C>1] observations.",
        "frame_replay_slack": "Frame slots beyond one per transition, as a fraction of "
                              "--buffer_capacity, for whole stacks at episode starts and "
                              "episodes' final frames (a transition that finds no slot is "
                              "stored unsampleable, counted in replay/dropped).",
    }

    num_envs: int = 16
    rollout_len: int = 4
    total_steps: int = 500_000
    lr: float = 5e-4
    anneal_lr: bool = True
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    n_step: int = 3
    dueling: bool = True
    buffer_capacity: int = 100_000
    batch_size: int = 128
    learner_steps: int = 2
    learning_starts: int = 5_000
    target_update_period: int = 500
    epsilon: float = 0.4
    epsilon_alpha: float = 7.0
    priority_alpha: float = 0.6
    priority_beta: float = 0.4
    priority_beta_end: float = 0.4  # β is annealed linearly to this over the run
    priority_eps: float = 1e-6  # added to |δ| so that no transition becomes unsampleable
    obs_storage: str = "float32"
    frame_stack_replay: str = "auto"
    frame_replay_slack: float = 0.0625  # about 2 extra frames per episode of 32+ steps

    def validate(self, num_devices: int = 1) -> "ApexConfig":
        """Checks every value; returns self.

        Raises:
          ConfigError: with a one-line message naming the flag and what is allowed.
        """
        super().validate(num_devices)
        common.check_positive_ints(
            self, "n_step", "buffer_capacity", "batch_size", "learner_steps",
            "target_update_period",
        )
        common.check_non_negative(
            self, "learning_starts", "epsilon_alpha", "priority_alpha", "priority_eps",
            "frame_replay_slack",
        )
        common.check_unit_interval(self, "epsilon", "priority_beta", "priority_beta_end")
        common.check_choice(self, "obs_storage", OBS_STORAGE)
        common.check_choice(self, "frame_stack_replay", FRAME_STACK_REPLAY)
        for name in ("buffer_capacity", "batch_size"):
            if getattr(self, name) % num_devices:
                raise errors.ConfigError(
                    f"--{name} must be divisible by the number of devices ({num_devices}), "
                    f"got {getattr(self, name)}"
                )
        if self.buffer_capacity < self.steps_per_update:
            raise errors.ConfigError(
                f"--buffer_capacity must be >= num_envs * rollout_len = {self.steps_per_update}"
                f", got {self.buffer_capacity}"
            )
        if self.learning_starts > self.buffer_capacity:
            raise errors.ConfigError(
                f"--learning_starts must be <= --buffer_capacity ({self.buffer_capacity}), "
                f"got {self.learning_starts}"
            )
        run_steps = self.num_updates * self.steps_per_update
        if self.learning_starts > run_steps:
            raise errors.ConfigError(
                f"--learning_starts must be <= the run's env steps per seed ({run_steps}, "
                f"from --total_steps), got {self.learning_starts}: the run would end before "
                "it learns"
            )
        return self


def frame_replay_on(config: ApexConfig, spec: Any) -> bool:
    """Whether ``config``'s replay stores frames once for ``spec``'s observations.

    "auto": for uint8 observations ``[H, W, C]`` with ``C > 1`` (stacked frames, newest
    last: Atari's ``[84, 84, 4]``); "on": for any ``[H, W, C > 1]`` stored as uint8.

    Raises:
      ConfigError: "on" for observations that are not ``[H, W, C > 1]``, or neither
        uint8 nor stored as uint8 (``--obs_storage=uint8``).
    """
    shape = tuple(spec.obs_shape)
    stacked = len(shape) == 3 and shape[-1] > 1
    uint8 = np.dtype(getattr(spec, "obs_dtype", np.float32)) == np.uint8
    if config.frame_stack_replay == "auto":
        return stacked and uint8
    if config.frame_stack_replay == "off":
        return False
    if not stacked:
        raise errors.ConfigError(
            f"--frame_stack_replay=on needs stacked frames [H, W, C > 1]; --env={config.env} "
            f"has shape {shape}"
        )
    if not (uint8 or config.obs_storage == "uint8"):
        raise errors.ConfigError(
            f"--frame_stack_replay=on stores frames as bytes; --env={config.env} has float "
            "observations: add --obs_storage=uint8 if they are bytes"
        )
    return True


# Classic control: chosen on CartPole-v1, where n_step=5 solved more seeds than 3
# (docs/benchmarks/defaults.md).
_CLASSIC = dict(
    hidden_sizes=(64, 64), rollout_len=8, lr=1e-3, n_step=5, buffer_capacity=100_000,
    batch_size=256, learner_steps=4, target_update_period=50,
)
_MINATAR = dict(
    num_envs=64, rollout_len=4, total_steps=10_000_000, lr=1e-4, hidden_sizes=(256, 256),
    torso="cnn", buffer_capacity=1_000_000, batch_size=512, learner_steps=1,
    learning_starts=50_000, target_update_period=2_500, obs_storage="uint8",
)
ENV_DEFAULTS: dict[str, dict] = {
    **{env: _CLASSIC for env in common.CLASSIC_ENVS},
    **{env: _MINATAR for env in common.MINATAR_ENVS},
    # Horgan et al. 2018 (Atari): 3-step double-Q dueling, Adam 0.00025/4 (eps 1.5e-4),
    # batch 512, target every 2500 learner steps, rewards clipped; the Nature torso.
    # 1e6 transitions (the paper: 2e6) take about 7.5 GB with frames stored once.
    common.ATARI: dict(
        rollout_len=8, total_steps=10_000_000, lr=6.25e-5, opt_eps=1.5e-4, n_step=3,
        torso="nature", hidden_sizes=(), buffer_capacity=1_000_000, batch_size=512,
        learner_steps=1, learning_starts=50_000, target_update_period=2_500,
        reward_clip=1.0,
    ),
}


def default_config(env: str, **overrides) -> ApexConfig:
    """The per-env defaults for ``env``, with ``overrides`` (``None`` values ignored)."""
    return common.make_default_config(ApexConfig, ENV_DEFAULTS, env, **overrides)
