"""What every on-device agent's config shares: fields, validation and per-env defaults."""

import dataclasses
import math
import numbers
from typing import ClassVar

from jaxrl_dist import errors

ACTIVATIONS = ("tanh", "relu")
TORSOS = ("mlp", "cnn", "nature", "impala")
# Pixel torsos: image observations [H, W, C]; the policy and value heads share them.
PIXEL_TORSOS = ("nature", "impala")
NATURE_MIN_SIZE = 36  # H, W: the Nature torso's VALID convolutions need it to leave 1x1
OPTIMIZERS = ("adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class OnDeviceConfig:
    """Hyperparameters shared by the on-device agents. Units: steps are environment steps.

    ``num_envs`` is the *global* number of environments, split evenly across
    devices. One update collects ``num_envs * rollout_len`` env steps.
    """

    agent: ClassVar[str] = ""
    # What each field means (the command-line flag of the same name shows it).
    HELP: ClassVar[dict[str, str]] = {
        "env": "A gymnax id (on-device envs), or gymnasium:<id> (host actors).",
        "num_envs": "Global number of environments, split over devices (on device).",
        "rollout_len": "Steps per env per update (T).",
        "total_steps": "Environment steps per seed (5e5 works).",
        "lr": "Learning rate.",
        "anneal_lr": "Decay the learning rate linearly to 0 over the run.",
        "optimizer": "adam or rmsprop (decay 0.99).",
        "opt_eps": "The optimizer's epsilon.",
        "gamma": "Discount factor.",
        "vf_coef": "Weight of the value loss.",
        "ent_coef": "Weight of the entropy bonus.",
        "max_grad_norm": "Gradients are clipped to this global norm.",
        "normalize_advantages": "Normalize advantages over each gradient step's global batch.",
        "hidden_sizes": "Widths of the hidden layers after the torso, comma-separated (e.g. "
                        "64,64); may be empty with --torso=nature or impala.",
        "activation": "tanh or relu.",
        "torso": "mlp; or, for image observations [H, W, C]: cnn (MinAtar's 3x3x16 "
                 "convolution), nature (Mnih et al. 2015's DQN torso, dense 512; H, W >= 36) "
                 "or impala (Espeholt et al. 2018's residual torso, dense 256); nature and "
                 "impala are shared by the policy and value heads and scale uint8 pixels "
                 "by 1/255.",
        "reward_clip": "Rewards are clipped to [-c, c] in the learner (0: not clipped); "
                       "episode returns are logged unclipped. Atari defaults: 1 (IMPALA, "
                       "Ape-X, A2C/A3C, PPO, as their papers and baselines do).",
    }

    env: str = "CartPole-v1"
    num_envs: int = 4
    rollout_len: int = 128
    total_steps: int = 500_000
    lr: float = 2.5e-4
    anneal_lr: bool = True
    optimizer: str = "adam"  # "adam" or "rmsprop" (decay 0.99)
    opt_eps: float = 1e-5
    gamma: float = 0.99
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    normalize_advantages: bool = False  # over the whole (global) batch of each gradient step
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"  # or cnn, nature, impala (image observations; see HELP)
    reward_clip: float = 0.0  # rewards clipped to [-c, c] in the learner (0: off)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_len

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update

    def validate(self, num_devices: int = 1):
        """Checks every value; returns self.

        Raises:
          ConfigError: with a one-line message naming the flag and what is allowed.
        """
        check_positive_ints(self, "num_envs", "rollout_len", "total_steps")
        check_positive_floats(self, "lr", "opt_eps")
        check_unit_interval(self, "gamma")
        check_non_negative(self, "vf_coef", "ent_coef", "max_grad_norm", "reward_clip")
        check_choice(self, "activation", ACTIVATIONS)
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "torso", TORSOS)
        sizes = self.hidden_sizes
        if not isinstance(sizes, (tuple, list)) or not all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0
            for h in sizes
        ) or not (sizes or self.torso in PIXEL_TORSOS):
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
        return self


def rounding_note(config) -> str | None:
    """One line when ``config.total_steps`` (env steps per seed) is not a whole number
    of updates, naming the env steps the run will take (rounded down); else ``None``."""
    steps = config.num_updates * config.steps_per_update
    if steps == config.total_steps:
        return None
    return (
        f"total_steps={config.total_steps} is rounded down to {steps} env steps per seed "
        f"({config.num_updates} updates of {config.steps_per_update})"
    )


def check_torso_fits(torso: str, obs_shape: tuple[int, ...], env: str) -> None:
    """Raises ConfigError unless ``--torso=torso`` takes ``env``'s observations of
    ``obs_shape``: ``cnn``/``nature``/``impala`` need images ``[H, W, C]``, and
    ``nature`` needs ``H, W >= NATURE_MIN_SIZE``."""
    obs_shape = tuple(obs_shape)
    if torso in ("cnn", *PIXEL_TORSOS) and len(obs_shape) != 3:
        raise errors.ConfigError(
            f"--torso={torso} needs image observations [H, W, C]; --env={env} has shape "
            f"{obs_shape} (--torso=mlp takes any)"
        )
    if torso == "nature" and min(obs_shape[:2]) < NATURE_MIN_SIZE:
        raise errors.ConfigError(
            f"--torso=nature needs images of at least {NATURE_MIN_SIZE}x{NATURE_MIN_SIZE} "
            f"(H, W); --env={env} has shape {obs_shape} (--torso=impala or cnn takes them)"
        )


def check_positive_ints(config, *names: str) -> None:
    """Raises ConfigError unless each named field is an int > 0: ``--name must be a
    positive integer, got 2.5`` (not an int), ``--name must be > 0, got 0`` (as the
    float fields say it)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise errors.ConfigError(f"--{name} must be a positive integer, got {value!r}")
        if value <= 0:
            raise errors.ConfigError(f"--{name} must be > 0, got {value!r}")


def check_positive_floats(config, *names: str) -> None:
    """Raises ConfigError unless each named field is a finite number > 0."""
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise errors.ConfigError(f"--{name} must be > 0, got {value!r}")


def check_non_negative(config, *names: str) -> None:
    """Raises ConfigError unless each named field is a finite number >= 0."""
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise errors.ConfigError(f"--{name} must be >= 0, got {value!r}")


def check_unit_interval(config, *names: str) -> None:
    """Raises ConfigError unless each named field is in [0, 1]."""
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise errors.ConfigError(f"--{name} must be in [0, 1], got {value!r}")


def check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    """Raises ConfigError unless field ``name`` is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise errors.ConfigError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")


CLASSIC_ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
CONTINUOUS_ENVS = ("Pendulum-v1", "MountainCarContinuous-v0")
MINATAR_ENVS = (
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar",
    "Seaquest-MinAtar",
)


ATARI = "atari"  # the ENV_DEFAULTS key of every Atari game


def is_atari(env: str) -> bool:
    """Whether ``env`` is an Atari game of the host path (``envs/atari.py``)."""
    return env.startswith(("gymnasium:ALE/", "envpool:"))


def make_default_config(config_cls, env_defaults: dict[str, dict], env: str, **overrides):
    """``config_cls`` with ``env_defaults[env]`` (or the class defaults) and ``overrides``.

    ``None`` overrides are ignored (an unset flag). ``gymnasium:<id>`` takes the
    defaults of the gymnax ``<id>`` unless it has its own entry; every Atari game
    (``gymnasium:ALE/<Game>-v5``, ``envpool:<Game>-v5``) takes ``env_defaults[ATARI]``.
    """
    key = env if env in env_defaults else env.removeprefix("gymnasium:")
    if key not in env_defaults and is_atari(env):
        key = ATARI
    values = dict(env_defaults.get(key, {}), env=env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_cls(**values)
