"""What every acting path and agent knows of an environment: its spec and one step.

``EnvSpec`` describes an environment without stepping it; ``Step`` is what one batched
step returns, on device (jax arrays, ``gymnax_env``) or on the host (numpy,
``gymnasium_env`` and ``envpool_env``).
"""

from typing import Any, NamedTuple

import numpy as np


class EnvSpec(NamedTuple):
    """What an agent or a learner needs to know of an environment (no stepping).

    ``obs_shape``: one observation's shape; ``action_space``: the gymnax or Gymnasium
    single-env space, whose class name (``Discrete``/``Box``) selects the action
    distribution; ``action_dim``: the number of actions (Discrete) or the action size
    (Box); ``discrete``: whether actions are indices; ``max_episode_steps``: the env's
    time limit (``None``: none); ``obs_dtype``: uint8 for pixels (kept uint8 up to the
    network), float32 otherwise.
    """

    obs_shape: tuple[int, ...]
    action_space: Any
    action_dim: int
    discrete: bool
    max_episode_steps: int | None = None
    obs_dtype: Any = np.float32


class Step(NamedTuple):
    """One step of ``B`` environments; every field has leading axis ``B``.

    ``obs`` is what to act on next (after any auto-reset); ``next_obs`` is the true
    successor of the step (the final observation where an episode ended: bootstrap
    from it at a truncation). ``terminated`` and ``truncated`` are exclusive: an episode
    that terminates on its last allowed step counts as terminated (no bootstrap).
    ``episode_return``/``episode_length`` (on device only; ``None`` on the host, which
    tracks episodes itself) hold the finished episode's totals where ``terminated |
    truncated`` and 0 elsewhere.
    """

    obs: Any  # [B, *obs_shape]
    reward: Any  # [B] float32
    terminated: Any  # [B] bool
    truncated: Any  # [B] bool
    next_obs: Any  # [B, *obs_shape]
    episode_return: Any = None  # [B] float32
    episode_length: Any = None  # [B] int32
