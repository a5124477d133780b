"""On-device rollouts: ``lax.scan`` over time of a vmapped gymnax environment.

Randomness is derived per *global* environment index (``fold_in``), so a run
produces the same trajectories whether its environments live on 1 or 4 devices.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dist import types
from jaxrl_dist.envs import gymnax_env


class EpisodeSums(NamedTuple):
    """Sums over the finished episodes of a rollout (reduce on device, divide on host)."""

    returns: jax.Array  # float32 scalar, sum of finished episodes' returns
    lengths: jax.Array  # float32 scalar, sum of their lengths
    count: jax.Array  # float32 scalar, number of finished episodes


def per_env_keys(key: jax.Array, env_ids: jax.Array, num_steps: int) -> jax.Array:
    """``[num_steps, B, 2]`` keys (acting, env) from ``key`` and global env ids ``[B]``."""

    def for_step(step_key):
        return jax.vmap(lambda i: jax.random.split(jax.random.fold_in(step_key, i)))(env_ids)

    return jax.vmap(for_step)(jax.random.split(key, num_steps))


def rollout(
    env: gymnax_env.GymnaxEnv,
    policy_fn: Callable[[Any, jax.Array], Any],
    sample_fn: Callable[[jax.Array, Any], jax.Array],
    log_prob_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    env_state: gymnax_env.EnvState,
    key: jax.Array,
    env_ids: jax.Array,
    num_steps: int,
) -> tuple[gymnax_env.EnvState, types.Transition, EpisodeSums]:
    """Acts for ``num_steps`` steps in ``B`` environments.

    Args:
      env: the batched environment.
      policy_fn: ``(params, obs [B, ...]) -> dist_params``.
      sample_fn: ``(keys [B], dist_params) -> actions``.
      log_prob_fn: ``(dist_params, actions) -> [B]`` log-probabilities.
      params: policy parameters.
      env_state: batched ``EnvState`` with leading axis ``B``.
      key: one PRNG key for the rollout (the same on every device).
      env_ids: ``[B]`` int32 global indices of these environments.
      num_steps: ``T``.

    Returns:
      ``(env_state, transition [T, B, ...], episode_sums)``.
    """
    keys = per_env_keys(key, env_ids, num_steps)

    def step(state, step_keys):
        dist = policy_fn(params, state.obs)
        action = sample_fn(step_keys[:, 0], dist)
        next_state, ts = env.step(state, action, step_keys[:, 1])
        transition = types.Transition(
            obs=state.obs,
            action=action,
            reward=ts.reward,
            terminated=ts.terminated,
            truncated=ts.truncated,
            next_obs=ts.next_obs,
            behaviour_log_prob=log_prob_fn(dist, action),
            behaviour_dist=dist,
        )
        done = (ts.terminated | ts.truncated).astype(jnp.float32)
        sums = (ts.episode_return.sum(), ts.episode_length.sum().astype(jnp.float32), done.sum())
        return next_state, (transition, sums)

    env_state, (transition, sums) = jax.lax.scan(step, env_state, keys)
    return env_state, transition, EpisodeSums(*(s.sum() for s in sums))
