"""Actor-critic losses (Mnih et al. 2016, A3C, arXiv 1602.01783, Algorithm S3; IMPALA sec. 4.2)."""

import chex
import jax
import jax.numpy as jnp


def policy_gradient_loss(log_probs: jax.Array, pg_advantages: jax.Array) -> jax.Array:
    """``−mean(A_t · log π(a_t|x_t))``, the policy-gradient surrogate.

    Its gradient is ``−mean(A_t ∇ log π(a_t|x_t))``: A3C's actor update (Algorithm
    S3, ``dθ ← ∇ log π(a_i|s_i) (R − V(s_i))``) and IMPALA's V-trace policy
    gradient (sec. 4.2). Advantages are treated as constants.

    Args:
      log_probs: ``[T, B]`` float, ``log π(a_t|x_t)`` under the parameters being trained.
      pg_advantages: ``[T, B]`` float (gradient stopped here).

    Returns:
      A float scalar.

    Raises:
      AssertionError (chex): shapes differ.
    """
    chex.assert_equal_shape([log_probs, pg_advantages])
    return -jnp.mean(jax.lax.stop_gradient(pg_advantages) * log_probs)


def baseline_loss(values: jax.Array, targets: jax.Array) -> jax.Array:
    """``0.5 · mean((targets − V(x_t))²)``, the critic's regression loss.

    ``targets`` are n-step returns (A3C) or V-trace ``vs`` (IMPALA eq. 1) and are
    treated as constants.

    Args:
      values: ``[T, B]`` float, ``V(x_t)`` under the parameters being trained.
      targets: ``[T, B]`` float.

    Returns:
      A float scalar.

    Raises:
      AssertionError (chex): shapes differ.
    """
    chex.assert_equal_shape([values, targets])
    return 0.5 * jnp.mean(jnp.square(jax.lax.stop_gradient(targets) - values))
