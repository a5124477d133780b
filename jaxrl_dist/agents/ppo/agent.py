"""PPO: one update = rollout, GAE and epochs of minibatch SGD.

The shared parts live in ``agents/base.py`` (networks, optimizer); the acting paths
(``anakin/on_device.py``, ``sebulba/learner.py``) compose ``learn`` with their actors.
This module is PPO's learning step only.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import flatten_util

from jaxrl_dist import losses, parallel
from jaxrl_dist.agents import base
from jaxrl_dist.agents.ppo import config as config_lib


class PPOState(NamedTuple):
    """PPO's own state: ``kl_beta`` ``[S]`` float32, β of the KL-penalty objective (eq. 8)."""

    kl_beta: jax.Array


class Batch(NamedTuple):
    """What one SGD step sees, ``[T', B', ...]`` (a minibatch of a rollout)."""

    obs: jax.Array
    action: jax.Array
    behaviour_log_prob: jax.Array
    behaviour_dist: object
    behaviour_value: jax.Array
    advantage: jax.Array
    target: jax.Array  # λ-return


class Agent(base.Agent):
    """PPO (Schulman et al. 2017, arXiv 1707.06347): clipped (eq. 7) or KL-penalty (eq. 8)
    objective on GAE advantages (eq. 11).

    Args:
      config: a ``PPOConfig``.
      spec, num_devices, tuning_: as ``base.Agent``.

    Raises:
      ConfigError: the config does not fit the devices.
    """

    config: config_lib.PPOConfig

    def optimizer_steps(self) -> int:
        cfg = self.config
        return cfg.num_updates * cfg.num_epochs * cfg.num_minibatches

    def init_agent_state(self, params) -> PPOState:
        del params
        return PPOState(jnp.asarray(self.config.kl_beta_init, jnp.float32))

    # ---------------------------------------------------------------- update
    def _loss(self, params, batch: Batch, advantage: jax.Array, kl_beta: jax.Array):
        cfg = self.config
        dist, value = self.policy_and_value(params, batch.obs)
        log_prob = self.dist.log_prob(dist, batch.action)
        log_ratio = log_prob - batch.behaviour_log_prob
        ratio = jnp.exp(log_ratio)
        if cfg.objective == "clip":
            pg_loss, clip_fraction = losses.ppo_clip_loss(
                log_prob, batch.behaviour_log_prob, advantage, cfg.clip_eps
            )
            # Unbiased low-variance estimate of KL[π_old || π] (Schulman 2020, "k3").
            kl = jax.lax.stop_gradient((ratio - 1.0) - log_ratio)
        else:
            kl = self.dist.kl(batch.behaviour_dist, dist)
            pg_loss = losses.ppo_kl_penalty_loss(
                log_prob, batch.behaviour_log_prob, advantage, kl, kl_beta
            )
            clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > cfg.clip_eps).astype(jnp.float32))
        v_loss = losses.value_loss(
            value,
            batch.behaviour_value,
            batch.target,
            cfg.clip_eps if cfg.clip_value else None,
        )
        entropy = jnp.mean(self.dist.entropy(dist))
        total = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
        metrics = {
            "loss/total": total,
            "loss/policy": pg_loss,
            "loss/value": v_loss,
            "loss/entropy": entropy,
            "ppo/kl": jnp.mean(jax.lax.stop_gradient(kl)),
            "ppo/clip_fraction": clip_fraction,
        }
        return total, metrics

    def _sgd_step(self, unravel, carry, xs):
        """One gradient step on a minibatch, on the flat parameter vector
        (``unravel`` rebuilds the tree); ``moments`` are its advantages' global
        ``(E[Â], E[Â²])`` (None without normalisation)."""
        flat_params, opt_state, kl_beta = carry
        batch, moments = xs
        advantage = batch.advantage
        if moments is not None:
            advantage = losses.standardize_advantages(advantage, moments)
        grads, metrics = parallel.mean_grad(
            lambda flat, *args: self._loss(unravel(flat), *args),
            flat_params, batch, advantage, kl_beta,
        )
        updates, opt_state = self.flat_optimizer.update(grads, opt_state, flat_params)
        flat_params = flat_params + updates
        metrics["opt/grad_norm"] = jnp.linalg.norm(grads)
        metrics.update(base.nonfinite_flags(
            loss=jnp.isfinite(metrics["loss/total"]), gradients=base.all_finite(grads),
            parameters=base.all_finite(flat_params),
        ))
        # Local metrics; averaged over devices once per update (in ``learn``).
        return (flat_params, opt_state, kl_beta), metrics

    def _permutations(self, key: jax.Array, env_ids: jax.Array) -> jax.Array:
        """``[E, T, B_local]`` int32: for each epoch, each env's time steps shuffled (keyed
        by its global id, so that the shuffle does not depend on the device layout)."""
        cfg = self.config
        epoch_keys = jax.random.split(key, cfg.num_epochs)
        env_keys = jax.vmap(
            lambda k: jax.vmap(jax.random.fold_in, (None, 0))(k, env_ids)
        )(epoch_keys)  # [E, B_local]
        perms = self.tuning.permutations(env_keys.reshape(-1), cfg.rollout_len)
        return jnp.swapaxes(perms.reshape(env_keys.shape + (cfg.rollout_len,)), 1, 2)

    def _minibatches(self, batch, perm: jax.Array):
        """Shuffles time per env by ``perm`` and cuts ``[T, B_local]`` into
        ``[M, T/t, B_local/g]`` (any pytree of ``[T, B_local, ...]`` arrays)."""
        cfg = self.config
        t_len, b_local = cfg.rollout_len, self.local_envs
        time_chunks, env_groups = cfg.minibatch_layout()

        def shuffle_and_cut(x):
            idx = perm.reshape(perm.shape + (1,) * (x.ndim - 2))
            x = jnp.take_along_axis(x, idx, axis=0)
            x = x.reshape(
                (time_chunks, t_len // time_chunks, b_local // env_groups, env_groups)
                + x.shape[2:]
            )
            x = jnp.moveaxis(x, 3, 1)
            return x.reshape((cfg.num_minibatches,) + x.shape[2:])

        return jax.tree.map(shuffle_and_cut, batch)

    def learn(self, params, opt_state, agent_state: PPOState, traj, key, env_ids):
        """GAE (eq. 11) on ``traj``, then epochs of minibatch SGD on eq. 7 or eq. 8; with
        eq. 8, β is then adapted (section 4) from ``ppo/update_kl``, the mean
        KL[π_old || π_new] over the rollout after the epochs (averaged over devices)."""
        cfg = self.config
        params_finite = base.all_finite(params)
        data_flags = base.nonfinite_flags(
            observations=base.all_finite(traj.obs, traj.next_obs),
            rewards=base.all_finite(traj.reward),
        )
        values, next_values = self.values_and_next_values(params, traj)
        advantages, targets = losses.gae(
            self.rewards(traj), values, next_values, self.discounts(traj), traj.truncated,
            cfg.gae_lambda,
        )
        batch = Batch(
            traj.obs, traj.action, traj.behaviour_log_prob, traj.behaviour_dist,
            values, advantages, targets,
        )

        perms = self._permutations(key, env_ids)  # [E, T, B_local]
        moments = None
        if cfg.normalize_advantages:
            # Every minibatch's global advantage statistics in ONE all-reduce per update
            # (not one per minibatch: across processes each collective costs a latency).
            moments = parallel.pmean(jax.vmap(
                lambda perm: jax.vmap(losses.advantage_moments)(
                    self._minibatches(advantages, perm))
            )(perms))  # [E, M, 2]

        flat_params, unravel = flatten_util.ravel_pytree(params)
        sgd_step = functools.partial(self._sgd_step, unravel)

        def epoch(carry, xs):
            perm, epoch_moments = xs
            return jax.lax.scan(
                sgd_step, carry, (self._minibatches(batch, perm), epoch_moments)
            )

        (flat_params, opt_state, kl_beta), metrics = jax.lax.scan(
            epoch, (flat_params, opt_state, agent_state.kl_beta), (perms, moments)
        )
        params = unravel(flat_params)
        step_flags = base.first_step_flags(metrics)  # [E, M] -> the first bad step's
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics.update(base.update_flags(params_finite, {**data_flags, **step_flags}))
        metrics["value/mean"] = jnp.mean(values)
        if cfg.objective == "kl":
            # Section 4's d: KL[π_old || π_new] over the whole rollout AFTER the epochs
            # (``ppo/kl`` is the mean KL each minibatch saw before its step; its first
            # step's is 0, so it lags d and with one SGD step per update it is always 0).
            metrics["ppo/update_kl"] = jnp.mean(
                self.dist.kl(traj.behaviour_dist, self.policy(params, traj.obs))
            )
        metrics = parallel.pmean(metrics)  # one all-reduce
        if cfg.objective == "kl":
            kl_beta = losses.adapt_kl_beta(kl_beta, metrics["ppo/update_kl"], cfg.kl_target)
        metrics["ppo/kl_beta"] = kl_beta
        return params, opt_state, PPOState(kl_beta), metrics
