"""On-device rollouts: ``lax.scan`` over time of a vmapped gymnax environment.

Randomness is derived per *global* environment index (``fold_in``), so a run
produces the same trajectories whether its environments live on 1 or 4 devices.
All of a rollout's random numbers are drawn in one vectorised call before the
time loop: on CPU, threefry hashing inside a scan body costs a rolled loop per
step.
"""

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


def rollout(
    env: gymnax_env.GymnaxEnv,
    policy: types.ActingFunctions,
    params: Any,
    env_state: gymnax_env.EnvState,
    key: jax.Array,
    env_ids: jax.Array,
    num_steps: int,
) -> tuple[gymnax_env.EnvState, types.Transition, EpisodeSums]:
    """Acts for ``num_steps`` steps in ``B`` environments.

    Args:
      env: the batched environment.
      policy: the acting functions.
      params: policy parameters.
      env_state: batched ``EnvState`` with leading axis ``B``.
      key: one PRNG key for the rollout (the same on every device).
      env_ids: ``[B]`` int32 global indices of these environments.
      num_steps: ``T``.

    Returns:
      ``(env_state, transition [T, B, ...], episode_sums)``.
    """

    def per_env(env_id):
        action_key, step_key, reset_key = jax.random.split(jax.random.fold_in(key, env_id), 3)
        noise = policy.noise(action_key, (num_steps,), policy.action_dim)
        return noise, jax.random.split(step_key, num_steps), jax.random.split(reset_key, num_steps)

    noise, step_keys, reset_keys = jax.vmap(per_env, out_axes=1)(env_ids)  # [T, B, ...]
    resets = env.reset_pool(reset_keys)

    def step(state, xs):
        step_noise, keys, reset = xs
        dist = policy.apply(params, state.obs)
        action = policy.sample_from_noise(dist, step_noise)
        next_state, ts = env.step(state, action, keys, reset)
        transition = types.Transition(
            obs=state.obs,
            action=action,
            reward=ts.reward,
            terminated=ts.terminated,
            truncated=ts.truncated,
            next_obs=ts.next_obs,
            behaviour_log_prob=policy.log_prob(dist, action),
            behaviour_dist=dist,
        )
        done = (ts.terminated | ts.truncated).astype(jnp.float32)
        sums = (ts.episode_return.sum(), ts.episode_length.sum().astype(jnp.float32), done.sum())
        return next_state, (transition, sums)

    env_state, (transition, sums) = jax.lax.scan(step, env_state, (noise, step_keys, resets))
    return env_state, transition, EpisodeSums(*(s.sum() for s in sums))
