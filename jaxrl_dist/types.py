"""Array containers shared by actors, learners and losses.

All trajectory arrays are time-major: ``[T, B, ...]`` where ``T`` is the
rollout length and ``B`` the number of environments (local to a device inside
``shard_map``).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any


class Transition(NamedTuple):
    """One rollout of ``T`` steps from ``B`` environments, time-major.

    Attributes:
      obs: ``[T, B, *obs_shape]`` observation the action was taken in.
      action: ``[T, B]`` int32 (discrete) or ``[T, B, A]`` float32 (continuous).
      reward: ``[T, B]`` float32 reward for the transition.
      terminated: ``[T, B]`` bool, the episode reached a terminal state (no bootstrap).
      truncated: ``[T, B]`` bool, the episode was cut by a time limit (bootstrap
        from ``next_obs``) and was not terminated.
      next_obs: ``[T, B, *obs_shape]`` observation *before* any auto-reset, i.e.
        the true successor state (gymnax ``info["final_observation"]``).
      behaviour_log_prob: ``[T, B]`` float32 log-probability of ``action`` under the
        behaviour policy.
      behaviour_dist: distribution parameters of the behaviour policy
        (``[T, B, A]`` logits, or a ``(mean, log_std)`` pair of ``[T, B, A]``).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    behaviour_log_prob: jax.Array
    behaviour_dist: Any


class ActingFunctions(NamedTuple):
    """How an on-device actor acts: pure functions of parameters and observations.

    ``apply``: ``(params, obs [B, ...]) -> dist_params``; ``noise``: ``(key, shape,
    action_dim) -> noise`` drawn before the time loop; ``sample_from_noise``:
    ``(dist_params, noise) -> actions``; ``log_prob``: ``(dist_params, actions) -> [B]``
    float32; ``action_dim``: the number of actions (Discrete) or the action size (Box).
    """

    apply: Callable[[Any, jax.Array], Any]
    noise: Callable[[jax.Array, tuple[int, ...], int], jax.Array]
    sample_from_noise: Callable[[Any, jax.Array], jax.Array]
    log_prob: Callable[[Any, jax.Array], jax.Array]
    action_dim: int
