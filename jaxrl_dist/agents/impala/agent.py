"""IMPALA's learner on device: V-trace-corrected actor-critic with a lagging behaviour policy.

On device, acting and learning take turns inside one compiled step, so the
policy lag of a distributed IMPALA is reproduced explicitly: the state carries
the policy parameters of the last ``policy_lag`` updates and every rollout acts
with the oldest of them. The learner's ``π`` therefore differs from the
behaviour ``μ`` that produced the data, and V-trace corrects for it.
"""

import jax
import jax.numpy as jnp

from jaxrl_dist import losses, types
from jaxrl_dist.agents.a2c import agent as a2c_agent
from jaxrl_dist.agents.impala import config as config_lib


class Agent(a2c_agent.Agent):
    """IMPALA (Espeholt et al. 2018, arXiv 1802.01561): V-trace targets (eq. 1), ρ-clipped
    policy gradient (sec. 4.2), baseline loss and entropy bonus; one gradient step per update.

    ``state.agent_state`` is the behaviour policy's parameters ``[L, ...]`` of the
    last ``L = policy_lag`` updates, oldest first (``()`` when ``L = 0``): the
    ``policy_key`` entry of the params (with a shared pixel torso, the whole network).

    Args:
      config: an ``ImpalaConfig``.
      spec, num_devices, tuning_: as ``base.Agent``.

    Raises:
      ConfigError: the config does not fit the devices.
    """

    config: config_lib.ImpalaConfig

    def sgd_layout(self) -> tuple[int, int]:
        return self.config.num_epochs, self.config.num_minibatches

    def init_agent_state(self, params: types.Params):
        lag = self.config.policy_lag
        if lag == 0:
            return ()
        return jax.tree.map(
            lambda x: jnp.broadcast_to(x, (lag, *x.shape)), params[self.policy_key]
        )

    def acting_params(self, params: types.Params, agent_state, env_ids) -> types.Params:
        """The oldest of the last ``policy_lag`` updates' policy parameters."""
        del env_ids
        if self.config.policy_lag == 0:
            return params
        return {self.policy_key: jax.tree.map(lambda x: x[0], agent_state)}

    def next_agent_state(self, params: types.Params, agent_state, learned):
        # At update u the buffer holds θ_{u-L}..θ_{u-1}; push θ_u (this update's
        # starting point), drop θ_{u-L}: update u+1 then acts with θ_{u+1-L}.
        del learned
        if self.config.policy_lag == 0:
            return ()
        return jax.tree.map(
            lambda old, current: jnp.concatenate([old[1:], current[None]]),
            agent_state, params[self.policy_key],
        )

    def targets(self, traj: types.Transition, log_probs, values, next_values):
        """V-trace ``vs`` and ``pg_advantages`` with ``log_rhos = log π − log μ``."""
        cfg = self.config
        log_rhos = log_probs - traj.behaviour_log_prob
        vtrace = losses.vtrace(
            log_rhos, self.discounts(traj), self.rewards(traj), values, None,
            clip_rho_threshold=cfg.clip_rho_threshold,
            clip_c_threshold=cfg.clip_c_threshold,
            clip_pg_rho_threshold=cfg.clip_pg_rho_threshold,
            lambda_=cfg.vtrace_lambda,
            next_values=next_values,
            truncated=traj.truncated,
        )
        rhos = jnp.exp(log_rhos)
        metrics = {
            "vtrace/rho_mean": jnp.mean(rhos),
            "vtrace/rho_min": jnp.min(rhos),
            "vtrace/rho_max": jnp.max(rhos),
            "vtrace/abs_log_rho_mean": jnp.mean(jnp.abs(log_rhos)),
            "vtrace/rho_clipped_fraction": jnp.mean(
                (rhos > cfg.clip_rho_threshold).astype(jnp.float32)
            ),
        }
        return vtrace.pg_advantages, vtrace.vs, metrics
