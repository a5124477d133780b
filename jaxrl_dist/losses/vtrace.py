"""V-trace off-policy targets (Espeholt et al. 2018, IMPALA, arXiv 1802.01561, sec. 4.1)."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class VTraceReturns(NamedTuple):
    """V-trace outputs, both ``[T, B]``: value targets ``vs`` and ρ-clipped ``pg_advantages``."""

    vs: jax.Array
    pg_advantages: jax.Array


def vtrace(
    log_rhos: jax.Array,
    discounts: jax.Array,
    rewards: jax.Array,
    values: jax.Array,
    bootstrap_value: jax.Array | None,
    *,
    clip_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
    next_values: jax.Array | None = None,
    truncated: jax.Array | None = None,
) -> VTraceReturns:
    """V-trace targets ``vs`` (eq. 1) and policy-gradient advantages (sec. 4.2).

    With ``ρ_t = min(ρ̄, π(a_t|x_t)/μ(a_t|x_t))``, ``c_i = λ·min(c̄, π/μ)`` and
    ``δ_t V = ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))``::

        v_s = V(x_s) + Σ_{t≥s} (Π_{i=s}^{t−1} γ_i c_i) δ_t V          (eq. 1)
        pg_advantage_s = min(ρ̄_pg, π/μ)_s · (r_s + γ_s v_{s+1} − V(x_s))

    computed by the recursion ``v_s − V(x_s) = δ_s V + γ_s c_s (v_{s+1} − V(x_{s+1}))``
    in a reverse ``lax.scan``. Argument names follow DeepMind's reference
    implementation (``trfl``/``scalable_agent``). Episode ends are expressed by
    ``discounts = 0``. Both outputs are wrapped in ``stop_gradient``: they are
    targets.

    Truncation (a time limit, not a terminal state): the successor of a
    truncated step is the episode's final observation, not the next row (which
    starts a new episode). Pass ``next_values`` (``V`` of each step's true
    successor) and ``truncated``: the step then bootstraps from
    ``next_values[t]`` with its discount ``γ`` while the trace is cut there.

    Args:
      log_rhos: ``[T, B]`` float, ``log π(a_t|x_t) − log μ(a_t|x_t)`` (target
        minus behaviour log-probabilities).
      discounts: ``[T, B]`` float, ``γ_t``; 0 where the episode terminated.
      rewards: ``[T, B]`` float.
      values: ``[T, B]`` float, ``V(x_t)`` under the current value function.
      bootstrap_value: ``[B]`` float, ``V(x_T)``; ignored (may be ``None``)
        when ``next_values`` is given, whose last row plays its part.
      clip_rho_threshold: ``ρ̄`` (``None``: no clipping).
      clip_c_threshold: ``c̄`` (``None``: no clipping).
      clip_pg_rho_threshold: ``ρ̄_pg`` of the policy-gradient advantage.
      lambda_: ``λ`` in ``[0, 1]`` multiplying the traces ``c_i`` (paper, sec. 4.1,
        "Remark 2").
      next_values: optional ``[T, B]`` float, ``V`` of each step's successor;
        default ``concat(values[1:], bootstrap_value)``.
      truncated: optional ``[T, B]`` bool, the episode was cut by a time limit
        after step ``t`` (requires ``next_values``).

    Returns:
      ``VTraceReturns(vs [T, B], pg_advantages [T, B])`` in ``values``' dtype.

    Raises:
      ValueError: ``bootstrap_value`` and ``next_values`` are both ``None``, or
        ``truncated`` is given without ``next_values``.
      AssertionError (chex): shapes or ranks do not match.
    """
    chex.assert_rank([log_rhos, discounts, rewards, values], 2)
    chex.assert_equal_shape([log_rhos, discounts, rewards, values])
    if next_values is None:
        if bootstrap_value is None:
            raise ValueError("vtrace needs bootstrap_value or next_values")
        if truncated is not None:
            raise ValueError("vtrace: truncated needs next_values (V of the final observations)")
        chex.assert_shape(bootstrap_value, values.shape[1:])
        next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    chex.assert_equal_shape([values, next_values])
    if truncated is None:
        keep_trace = jnp.ones_like(values)
    else:
        chex.assert_equal_shape([values, truncated])
        keep_trace = 1.0 - truncated.astype(values.dtype)

    rhos = jnp.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else jnp.minimum(clip_rho_threshold, rhos)
    cs = rhos if clip_c_threshold is None else jnp.minimum(clip_c_threshold, rhos)
    cs = lambda_ * cs * keep_trace
    deltas = clipped_rhos * (rewards + discounts * next_values - values)

    def backward(acc, xs):
        delta, discount, c = xs
        acc = delta + discount * c * acc  # v_s − V(x_s)
        return acc, acc

    _, vs_minus_v = jax.lax.scan(
        backward, jnp.zeros_like(values[0]), (deltas, discounts, cs), reverse=True
    )
    vs = values + vs_minus_v
    # v_{s+1} for the pg advantage: the successor's V-trace target, or its plain
    # value where no correction is available (last step, truncation).
    next_corrections = jnp.concatenate([vs_minus_v[1:], jnp.zeros_like(values[:1])], axis=0)
    vs_next = next_values + keep_trace * next_corrections
    pg_rhos = rhos if clip_pg_rho_threshold is None else jnp.minimum(clip_pg_rho_threshold, rhos)
    pg_advantages = pg_rhos * (rewards + discounts * vs_next - values)
    return VTraceReturns(jax.lax.stop_gradient(vs), jax.lax.stop_gradient(pg_advantages))
