"""The actor-critic update shared by A2C and IMPALA; as it stands, A2C.

One compiled update: act ``T`` steps in every env (``acting_params``), compute
targets and policy-gradient advantages (``targets``), take one gradient step on
``pg + vf_coef * baseline - ent_coef * entropy`` with gradients averaged over
the mesh. A2C acts with the current parameters and uses n-step returns; IMPALA
(``agents/impala/agent.py``) overrides the hooks.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from jaxrl_dist import losses, parallel, types
from jaxrl_dist.agents import base


class Agent(base.Agent):
    """A2C: A3C's n-step advantage actor-critic (Mnih et al. 2016, Algorithm S3), synchronous.

    Args:
      config: an ``A2CConfig`` (or a subclass's config).
      spec, num_devices, tuning_: as ``base.Agent``.

    Raises:
      ConfigError: the config does not fit the devices.
    """

    # ------------------------------------------------------------- hooks
    def update_keys(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One key for acting and learning (``learn`` draws nothing)."""
        return key, key

    def sgd_layout(self) -> tuple[int, int]:
        """``(epochs, minibatches)`` of gradient steps per rollout; A2C: one step, ``(1, 1)``."""
        return 1, 1

    def optimizer_steps(self) -> int:
        epochs, minibatches = self.sgd_layout()
        return self.config.num_updates * epochs * minibatches

    def targets(self, traj: types.Transition, log_probs, values, next_values):
        """``(pg_advantages, value_targets, metrics)``, all ``[T, B_local]``.

        A2C: with ``gae_lambda = 1`` the n-step returns of A3C, ``R_t = r_t + γ_t
        R_{t+1}`` bootstrapped from the value after the last step (and from the
        final observation at a truncation), advantages ``R_t − V(x_t)``.
        """
        del log_probs
        advantages, returns = losses.gae(
            self.rewards(traj), values, next_values, self.discounts(traj), traj.truncated,
            self.config.gae_lambda,
        )
        return advantages, returns, {}

    # -------------------------------------------------------------- update
    def _loss(self, params, traj: types.Transition):
        cfg = self.config
        dist, values, next_values = self.policy_and_values(params, traj)
        log_probs = self.dist.log_prob(dist, traj.action)
        pg_advantages, value_targets, metrics = self.targets(
            traj, jax.lax.stop_gradient(log_probs), jax.lax.stop_gradient(values),
            jax.lax.stop_gradient(next_values),
        )
        if cfg.normalize_advantages:
            pg_advantages = losses.normalize_advantages(pg_advantages, parallel.DATA_AXIS)
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

    def _sgd_step(self, carry, minibatch: types.Transition, data_flags=None):
        """One gradient step; ``data_flags`` (the update's ``observations``/``rewards``
        flags, local) join its metrics' one all-reduce with the step's own flags."""
        params, opt_state = carry
        grads, metrics = parallel.mean_grad(self._loss, params, minibatch)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics.update(data_flags or {})
        metrics.update(base.nonfinite_flags(
            loss=jnp.isfinite(metrics["loss/total"]), gradients=base.all_finite(grads),
            parameters=base.all_finite(params),
        ))
        metrics = parallel.pmean(metrics)
        metrics["opt/grad_norm"] = optax.tree.norm(grads)
        return (params, opt_state), metrics

    def learn(self, params, opt_state, agent_state, traj: types.Transition, key, env_ids):
        del key, env_ids
        epochs, minibatches = self.sgd_layout()
        params_finite = base.all_finite(params)
        data_flags = base.nonfinite_flags(
            observations=base.all_finite(traj.obs, traj.next_obs),
            rewards=base.all_finite(traj.reward),
        )
        sgd_step = functools.partial(self._sgd_step, data_flags=data_flags)
        # Minibatch j holds the envs whose global index is j mod M: the same sets on any
        # number of devices (local envs per device are a multiple of M).
        split = jax.tree.map(
            lambda x: jnp.moveaxis(
                x.reshape((x.shape[0], -1, minibatches) + x.shape[2:]), 2, 0
            ),
            traj,
        )
        (params, opt_state), metrics = jax.lax.scan(
            lambda carry, _: jax.lax.scan(sgd_step, carry, split),
            (params, opt_state), None, length=epochs,
        )
        step_flags = base.first_step_flags(metrics)  # [E, M] -> the first bad step's
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics.update(base.update_flags(params_finite, step_flags))
        return params, opt_state, agent_state, metrics
