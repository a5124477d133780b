"""The actor-critic update shared by A2C and IMPALA; as it stands, A2C.

One compiled update: act ``T`` steps in every env (``acting_params``), compute
targets and policy-gradient advantages (``targets``), take one gradient step on
``pg + vf_coef * baseline - ent_coef * entropy`` with gradients averaged over
the mesh. A2C acts with the current parameters and uses n-step returns; IMPALA
(``agents/impala/learner.py``) overrides the two hooks.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxrl_dist import losses, parallel, types
from jaxrl_dist.agents import on_device

TrainState = on_device.TrainState


class Learner(on_device.OnDeviceLearner):
    """A2C: A3C's n-step advantage actor-critic (Mnih et al. 2016, Algorithm S3), synchronous.

    Args:
      config: an ``A2CConfig`` (or a subclass's config).
      mesh, num_seeds, env_params: as ``OnDeviceLearner``.

    Raises:
      ConfigError: the config does not fit the mesh.
    """

    # ------------------------------------------------------------- hooks
    def acting_params(self, state: TrainState) -> types.Params:
        """Parameters of the behaviour policy μ for this update: the current ones."""
        return state.params

    def next_agent_state(self, state: TrainState, params: types.Params) -> Any:
        """The agent's own state after an update to ``params``."""
        del params
        return state.agent_state

    def targets(self, traj: types.Transition, log_probs, values, next_values):
        """``(pg_advantages, value_targets, metrics)``, all ``[T, B_local]``.

        A2C: with ``gae_lambda = 1`` the n-step returns of A3C, ``R_t = r_t + γ_t
        R_{t+1}`` bootstrapped from the value after the last step (and from the
        final observation at a truncation), advantages ``R_t − V(x_t)``.
        """
        del log_probs
        advantages, returns = losses.gae(
            traj.reward, values, next_values, self.discounts(traj), traj.truncated,
            self.config.gae_lambda,
        )
        return advantages, returns, {}

    # -------------------------------------------------------------- update
    def _loss(self, params, traj: types.Transition):
        cfg = self.config
        dist = self.policy(params, traj.obs)
        log_probs = self.dist.log_prob(dist, traj.action)
        values, next_values = self.values_and_next_values(params, traj)
        pg_advantages, value_targets, metrics = self.targets(
            traj, jax.lax.stop_gradient(log_probs), jax.lax.stop_gradient(values),
            jax.lax.stop_gradient(next_values),
        )
        pg_loss = losses.policy_gradient_loss(log_probs, pg_advantages)
        v_loss = losses.baseline_loss(values, value_targets)
        entropy = jnp.mean(self.dist.entropy(dist))
        total = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
        metrics.update({
            "loss/total": total,
            "loss/policy": pg_loss,
            "loss/value": v_loss,
            "loss/entropy": entropy,
            "value/mean": jnp.mean(values),
            "advantage/mean": jnp.mean(pg_advantages),
        })
        return total, metrics

    def _local_update(self, state: TrainState, key: jax.Array):
        key = jax.random.fold_in(key, state.update_step)
        env_state, traj, episode_metrics = self.rollout(
            self.acting_params(state), state.env_state, key, self.local_env_ids()
        )
        grads, metrics = jax.grad(self._loss, has_aux=True)(state.params, traj)
        grads = parallel.pmean(grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = parallel.pmean(metrics)
        metrics["opt/grad_norm"] = optax.tree.norm(grads)
        metrics.update(episode_metrics)
        new_state = TrainState(
            params, opt_state, env_state, state.update_step + 1,
            self.next_agent_state(state, params),
        )
        return new_state, metrics
