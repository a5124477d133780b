"""PPO objectives (Schulman et al. 2017, arXiv 1707.06347).

All functions are elementwise over matching shapes (``[T, B]`` or a flattened
minibatch ``[N]``) and return scalar float32 *losses* (to minimise), i.e. the
negated objectives of the paper.
"""

import chex
import jax
import jax.numpy as jnp


def ppo_clip_loss(
    log_probs: jax.Array,
    behaviour_log_probs: jax.Array,
    advantages: jax.Array,
    clip_eps: float,
) -> tuple[jax.Array, jax.Array]:
    """Negated clipped surrogate objective L^CLIP, eq. (7).

    L^CLIP = E_t[min(r_t Â_t, clip(r_t, 1 − ε, 1 + ε) Â_t)],  r_t = π(a|s) / π_old(a|s).

    Args:
      log_probs: log π_θ(a_t|s_t), float32, any shape ``S``.
      behaviour_log_probs: log π_old(a_t|s_t), shape ``S`` (no gradient flows).
      advantages: Â_t, shape ``S`` (no gradient flows).
      clip_eps: ε > 0.

    Returns:
      ``(loss, clip_fraction)``: scalar −L^CLIP and the fraction of samples
      with |r_t − 1| > ε.

    Raises:
      AssertionError (chex): shapes differ.
    """
    chex.assert_equal_shape([log_probs, behaviour_log_probs, advantages])
    behaviour_log_probs, advantages = jax.lax.stop_gradient((behaviour_log_probs, advantages))
    ratio = jnp.exp(log_probs - behaviour_log_probs)
    surrogate = jnp.minimum(
        ratio * advantages, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    )
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    return -jnp.mean(surrogate), clip_fraction


def ppo_kl_penalty_loss(
    log_probs: jax.Array,
    behaviour_log_probs: jax.Array,
    advantages: jax.Array,
    kl: jax.Array,
    beta: jax.Array | float,
) -> jax.Array:
    """Negated KL-penalised surrogate objective L^KLPEN, eq. (8).

    L^KLPEN = E_t[r_t Â_t − β · KL[π_old(·|s_t), π_θ(·|s_t)]].

    Args:
      log_probs: log π_θ(a_t|s_t), float32, shape ``S``.
      behaviour_log_probs: log π_old(a_t|s_t), shape ``S`` (no gradient).
      advantages: Â_t, shape ``S`` (no gradient).
      kl: KL[π_old || π_θ] per state, shape ``S`` (differentiable in θ).
      beta: penalty coefficient β ≥ 0 (no gradient).

    Returns:
      Scalar −L^KLPEN.

    Raises:
      AssertionError (chex): shapes differ.
    """
    chex.assert_equal_shape([log_probs, behaviour_log_probs, advantages, kl])
    behaviour_log_probs, advantages, beta = jax.lax.stop_gradient(
        (behaviour_log_probs, advantages, beta)
    )
    ratio = jnp.exp(log_probs - behaviour_log_probs)
    return -jnp.mean(ratio * advantages - beta * kl)


def adapt_kl_beta(beta: jax.Array, kl: jax.Array, kl_target: float) -> jax.Array:
    """Adaptive KL coefficient update of section 4 (after eq. 8).

    If d < d_targ / 1.5: β ← β / 2; if d > 1.5 · d_targ: β ← 2β; else unchanged.
    Not in the paper, which gives no bounds: β stops halving at the smallest normal
    number of its dtype (float32: ~1.2e-38). Halved on every update while the KL stays
    low (as an annealed learning rate goes to 0), β would otherwise reach exactly 0
    after ~127 updates from 1 (XLA flushes subnormals to 0), and 0 never doubles back.
    A β of 0 stays 0 (no penalty).

    Args:
      beta: current β, scalar float32, >= 0.
      kl: measured mean KL d of the last policy update, scalar.
      kl_target: d_targ > 0.

    Returns:
      The new β, scalar, ``beta``'s dtype.
    """
    beta = jnp.asarray(beta)
    halved = beta / 2.0
    floor = jnp.finfo(beta.dtype).tiny
    beta = jnp.where((kl < kl_target / 1.5) & (halved >= floor), halved, beta)
    return jnp.where(kl > kl_target * 1.5, beta * 2.0, beta)


def value_loss(
    values: jax.Array,
    behaviour_values: jax.Array,
    returns: jax.Array,
    clip_eps: float | None = None,
) -> jax.Array:
    """Squared-error value loss L^VF of eq. (9), optionally clipped.

    Unclipped: ½ E[(V_θ(s_t) − R_t)²]. Clipped (as in OpenAI baselines' PPO2):
    ½ E[max((V_θ − R)², (V_old + clip(V_θ − V_old, −ε, ε) − R)²)].

    Args:
      values: V_θ(s_t), float32, shape ``S``.
      behaviour_values: V_old(s_t) at rollout time, shape ``S`` (no gradient).
      returns: targets R_t, shape ``S`` (no gradient).
      clip_eps: ε for value clipping, or None for no clipping.

    Returns:
      Scalar loss.

    Raises:
      AssertionError (chex): shapes differ.
    """
    chex.assert_equal_shape([values, behaviour_values, returns])
    behaviour_values, returns = jax.lax.stop_gradient((behaviour_values, returns))
    loss = jnp.square(values - returns)
    if clip_eps is not None:
        clipped = behaviour_values + jnp.clip(values - behaviour_values, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, jnp.square(clipped - returns))
    return 0.5 * jnp.mean(loss)


def advantage_moments(advantages: jax.Array) -> jax.Array:
    """``[2]`` float32 ``(E[Â], E[Â²])`` over all elements of ``advantages``.

    The sufficient statistics of ``normalize_advantages``: averaged over devices
    (``lax.pmean``, one all-reduce for any number of minibatches stacked on a
    leading axis) they are those of the global minibatch. Per-minibatch advantage
    normalisation is not in Schulman et al. (2017); it is OpenAI baselines' PPO2
    practice, which the paper's results used.

    Args:
      advantages: float32 of any shape (no gradient flows).
    """
    advantages = jax.lax.stop_gradient(advantages)
    return jnp.stack([jnp.mean(advantages), jnp.mean(jnp.square(advantages))])


def standardize_advantages(
    advantages: jax.Array, moments: jax.Array, eps: float = 1e-8
) -> jax.Array:
    """(Â − mean) / (std + eps) with ``moments`` = ``(E[Â], E[Â²])`` (``[2]``).

    var = E[Â²] − E[Â]², clamped at 0 against rounding. Returns float32 shaped like
    ``advantages`` (no gradient flows).

    Raises:
      AssertionError (chex): ``moments`` is not of shape ``[2]``.
    """
    chex.assert_shape(moments, (2,))
    mean, mean_sq = moments[0], moments[1]
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    return (jax.lax.stop_gradient(advantages) - mean) / (jnp.sqrt(var) + eps)


def normalize_advantages(
    advantages: jax.Array, axis_name: str | None = None, eps: float = 1e-8
) -> jax.Array:
    """(Â − mean) / (std + eps) over all elements, across devices if ``axis_name`` is given.

    With ``axis_name`` the statistics are those of the global minibatch (every
    device must hold the same number of elements), so that sharded and
    unsharded training normalise identically.
    """
    advantages = jax.lax.stop_gradient(advantages)
    if axis_name is None:
        mean = jnp.mean(advantages)
        var = jnp.mean(jnp.square(advantages - mean))
        return (advantages - mean) / (jnp.sqrt(var) + eps)
    # One all-reduce for both moments (each collective pays a fixed latency across
    # processes).
    moments = jax.lax.pmean(advantage_moments(advantages), axis_name)
    return standardize_advantages(advantages, moments, eps)
