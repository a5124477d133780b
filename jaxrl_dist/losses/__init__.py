"""Pure, jit-able RL losses and targets on time-major ``[T, B]`` arrays.

GAE and PPO (Schulman et al.), V-trace (Espeholt et al.), actor-critic (Mnih et al.),
n-step double-Q learning (van Hasselt et al., Horgan et al.).

Import the module, not the symbols::

    from jaxrl_dist import losses
    advantages, returns = losses.gae(rewards, values, next_values, discounts, truncated, 0.95)
"""

from jaxrl_dist.losses.actor_critic import baseline_loss, policy_gradient_loss
from jaxrl_dist.losses.dqn import double_q_td_error, huber_loss, n_step_returns
from jaxrl_dist.losses.gae import gae
from jaxrl_dist.losses.ppo import (
    adapt_kl_beta,
    advantage_moments,
    normalize_advantages,
    ppo_clip_loss,
    ppo_kl_penalty_loss,
    standardize_advantages,
    value_loss,
)
from jaxrl_dist.losses.vtrace import VTraceReturns, vtrace

__all__ = [
    "VTraceReturns",
    "adapt_kl_beta",
    "advantage_moments",
    "baseline_loss",
    "double_q_td_error",
    "gae",
    "huber_loss",
    "n_step_returns",
    "normalize_advantages",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "ppo_kl_penalty_loss",
    "standardize_advantages",
    "value_loss",
    "vtrace",
]
