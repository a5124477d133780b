"""Generalized advantage estimation, GAE(λ).

Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (arXiv 1506.02438), and its truncated form in PPO
(Schulman et al. 2017, arXiv 1707.06347, eq. 11):

    δ_t = r_t + γ_t · V(x'_{t+1}) − V(x_t)
    Â_t = δ_t + γ_t · λ · (1 − truncated_t) · Â_{t+1},      Â_T = 0

where ``x'_{t+1}`` is the true successor of ``x_t`` (before any auto-reset),
``γ_t = γ·(1 − terminated_t)`` (termination stops bootstrapping) and a time-limit
truncation cuts the λ-trace (the next step belongs to a new episode) while
*still* bootstrapping from ``V(x'_{t+1})``.
"""

import chex
import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    discounts: jax.Array,
    truncated: jax.Array,
    lambda_: float,
) -> tuple[jax.Array, jax.Array]:
    """GAE(λ) advantages and λ-returns, time-major.

    Args:
      rewards: ``[T, B]`` float32, r_t.
      values: ``[T, B]`` float32, V(x_t).
      next_values: ``[T, B]`` float32, V(x'_{t+1}) of the true successor state
        (for the last step this is the bootstrap value).
      discounts: ``[T, B]`` float32, γ·(1 − terminated_t).
      truncated: ``[T, B]`` bool or float, the episode was cut by a time limit
        after step t (and did not terminate).
      lambda_: λ in [0, 1].

    Returns:
      ``(advantages, returns)``, both ``[T, B]`` float32, with
      ``returns = advantages + values``. Gradients are stopped.

    Raises:
      AssertionError (chex): ranks or shapes differ.
    """
    chex.assert_rank([rewards, values, next_values, discounts, truncated], 2)
    chex.assert_equal_shape([rewards, values, next_values, discounts, truncated])
    rewards, values, next_values, discounts = jax.lax.stop_gradient(
        (rewards, values, next_values, discounts)
    )
    deltas = rewards + discounts * next_values - values
    trace = discounts * lambda_ * (1.0 - truncated.astype(deltas.dtype))

    def step(next_adv, xs):
        delta, decay = xs
        adv = delta + decay * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, trace), reverse=True, unroll=8
    )
    return advantages, advantages + values

