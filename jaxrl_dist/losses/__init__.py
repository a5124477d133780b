"""Pure, jit-able RL losses and targets on time-major ``[T, B]`` arrays.

Import the module, not the symbols::

    from jaxrl_dist import losses
    advantages, returns = losses.gae(rewards, values, next_values, discounts, truncated, 0.95)
"""

from jaxrl_dist.losses.gae import gae
from jaxrl_dist.losses.ppo import (
    adapt_kl_beta,
    normalize_advantages,
    ppo_clip_loss,
    ppo_kl_penalty_loss,
    value_loss,
)

__all__ = [
    "adapt_kl_beta",
    "gae",
    "normalize_advantages",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "value_loss",
]
