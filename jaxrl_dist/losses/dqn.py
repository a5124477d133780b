"""Q-learning targets and losses: n-step returns, double-Q TD errors, Huber loss.

Sources: DQN (Mnih et al. 2015, Nature 518, "Methods": Huber-clipped TD error,
target network), double Q-learning (van Hasselt et al. 2016, arXiv 1509.06461,
eq. 4), and the n-step double-Q target of Ape-X DQN (Horgan et al. 2018,
arXiv 1803.00933, sec. 3.1):
``G_t = R_{t+1} + … + γ^{n−1} R_{t+n} + γ^n q(S_{t+n}, argmax_a q(S_{t+n}, a, θ), θ⁻)``.
"""

import chex
import jax
import jax.numpy as jnp


def n_step_returns(
    rewards: jax.Array, discounts: jax.Array, truncated: jax.Array, n: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """n-step returns inside a time-major rollout, stopping at episode ends.

    For each step ``t`` the return sums ``m = min(n, steps left in the rollout,
    steps to the end of t's episode)`` rewards:
    ``G_t = Σ_{k<m} (Π_{j<k} γ_{t+j}) r_{t+k}``, with bootstrap discount
    ``Γ_t = Π_{j<m} γ_{t+j}`` and bootstrap step ``t + m − 1`` (bootstrap from
    that step's true successor ``next_obs``). Termination stops bootstrapping
    (``γ = 0`` there, so ``Γ_t = 0``); truncation stops the sum but bootstraps.

    Args:
      rewards: ``[T, B]`` float32, r_t.
      discounts: ``[T, B]`` float32, γ·(1 − terminated_t).
      truncated: ``[T, B]`` bool, a time limit cut the episode after step t.
      n: the number of steps, >= 1.

    Returns:
      ``(returns [T, B] float32, bootstrap_discounts [T, B] float32,
      bootstrap_steps [T, B] int32)``.

    Raises:
      ValueError: ``n < 1``.
      AssertionError (chex): ranks or shapes differ.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    chex.assert_rank([rewards, discounts, truncated], 2)
    chex.assert_equal_shape([rewards, discounts, truncated])
    num_steps = rewards.shape[0]
    t = jnp.arange(num_steps)[:, None] * jnp.ones(rewards.shape[1:], jnp.int32)
    returns = jnp.zeros_like(rewards)
    discount = jnp.ones_like(rewards)
    last = t
    alive = jnp.ones(rewards.shape, bool)
    for k in range(n):
        idx = jnp.minimum(t + k, num_steps - 1)
        valid = alive & (t + k < num_steps)
        r = jnp.take_along_axis(rewards, idx, axis=0)
        d = jnp.take_along_axis(discounts, idx, axis=0)
        cut = jnp.take_along_axis(truncated, idx, axis=0)
        returns = returns + jnp.where(valid, discount * r, 0.0)
        last = jnp.where(valid, idx, last)
        discount = jnp.where(valid, discount * d, discount)
        alive = valid & ~cut & (d > 0)
    return returns, discount, last.astype(jnp.int32)


def double_q_td_error(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    q_t_online: jax.Array,
) -> jax.Array:
    """Double-Q TD errors ``y − Q(s, a)`` (van Hasselt et al. 2016, eq. 4).

    ``y = r_t + discount_t · Q_target(s', argmax_a Q_online(s', a))``; gradients
    flow only through ``q_tm1``.

    Args:
      q_tm1: ``[B, A]`` float32, online Q(s, ·).
      a_tm1: ``[B]`` int32, actions taken.
      r_t: ``[B]`` float32, (n-step) returns.
      discount_t: ``[B]`` float32, bootstrap discounts (0 after termination).
      q_t_target: ``[B, A]`` float32, target network Q(s', ·).
      q_t_online: ``[B, A]`` float32, online Q(s', ·) (selects the action).

    Returns:
      ``[B]`` float32 TD errors.

    Raises:
      AssertionError (chex): ranks or shapes differ.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online], [2, 1, 1, 1, 2, 2])
    chex.assert_equal_shape([q_tm1, q_t_target, q_t_online])
    best = jnp.argmax(q_t_online, axis=-1)
    bootstrap = jnp.take_along_axis(q_t_target, best[:, None], axis=-1)[:, 0]
    target = jax.lax.stop_gradient(r_t + discount_t * bootstrap)
    q_taken = jnp.take_along_axis(q_tm1, a_tm1[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return target - q_taken


def huber_loss(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Elementwise Huber loss: ``x²/2`` for ``|x| <= δ``, ``δ(|x| − δ/2)`` beyond (DQN's
    error clipping, Mnih et al. 2015). Same shape and dtype as ``x``."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * quadratic**2 + delta * (abs_x - quadratic)
