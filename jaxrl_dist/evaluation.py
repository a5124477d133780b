"""Greedy evaluation episodes on device.

Each of ``num_episodes`` fresh environments plays one full episode with the
policy's mode action (argmax logits / Gaussian mean); the undiscounted return of
that first episode is recorded. Episodes end by termination or by the env's
time limit, so ``max_episode_steps`` steps always suffice.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist.envs import gymnax_env


def make_evaluator(
    env: gymnax_env.GymnaxEnv,
    policy_apply: Callable[[Any, jax.Array], Any],
    mode_fn: Callable[[Any], jax.Array],
    num_episodes: int,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
    """Returns a jitted ``(params[S], key) -> returns [S, num_episodes]`` (float32).

    ``compiler_options``: XLA options of the program (``tuning.Tuning.run_once_options``).

    ``params`` carry a leading seed axis ``S``; every seed is evaluated on the
    same ``num_episodes`` initial states drawn from ``key``.
    """

    def evaluate_one(params, key):
        reset_key, step_key = jax.random.split(key)
        state = env.reset(jax.random.split(reset_key, num_episodes))
        step_keys = jax.random.split(step_key, (env.max_episode_steps, num_episodes))

        def step(carry, keys):
            state, returns, finished = carry
            action = mode_fn(policy_apply(params, state.obs))
            # No auto-reset is needed: only each env's first episode counts.
            state, ts = env.step(state, action, keys, (state.obs, state.env_state))
            returns = returns + jnp.where(finished, 0.0, ts.reward)
            finished = finished | ts.terminated | ts.truncated
            return (state, returns, finished), None

        init = (state, jnp.zeros(num_episodes, jnp.float32), jnp.zeros(num_episodes, bool))
        (_, returns, _), _ = jax.lax.scan(step, init, step_keys)
        return returns

    return jax.jit(
        jax.vmap(evaluate_one, in_axes=(0, None)), compiler_options=compiler_options or {}
    )


def evaluate_on_host(
    env: str,
    policy_apply: Callable[[Any, jax.Array], Any],
    mode_fn: Callable[[Any], jax.Array],
    params: Any,
    num_episodes: int,
    seed: int,
    max_steps: int | None,
) -> np.ndarray:
    """Greedy returns ``[num_episodes]`` (float64) of ``gymnasium:<id>`` env ``env``.

    ``num_episodes`` envs (seeds ``seed + i``) each play their first episode with
    the policy's mode action; steps are capped at ``max_steps`` (the env's time
    limit; 100 000 when it has none).
    """
    from jaxrl_dist.envs import gymnasium_env

    vec = gymnasium_env.VectorEnv(env, num_episodes, seed, "sync")
    greedy = jax.jit(lambda p, o: mode_fn(policy_apply(p, o)))
    returns = np.zeros(num_episodes)
    finished = np.zeros(num_episodes, bool)
    try:
        for _ in range(max_steps or 100_000):
            step = vec.step(np.asarray(greedy(params, vec.obs)))
            returns += np.where(finished, 0.0, step.reward)
            finished |= step.terminated | step.truncated
            if finished.all():
                break
    finally:
        vec.close()
    return returns
