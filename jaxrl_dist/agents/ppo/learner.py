"""PPO learner: rollout + GAE + epochs of minibatch SGD as one compiled step.

``Learner.update(state, key) -> (state, metrics)`` is one PPO update over the
device mesh: every device steps its share of the environments, computes
advantages locally, and takes minibatch gradient steps whose gradients are
averaged with ``lax.pmean``; parameters stay replicated. A leading *seed* axis
``S`` (``--num_seeds``) is vmapped through the whole step, so ``S`` independent
runs share one program.

Randomness of update ``u`` is ``fold_in(key, u)`` further folded with *global*
environment indices, so results do not depend on the number of devices nor on
how many updates are scanned per host call.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_dist import distributions, losses, networks, parallel, types
from jaxrl_dist.actors import rollout as rollout_lib
from jaxrl_dist.agents.ppo import config as config_lib
from jaxrl_dist.envs import gymnax_env


class TrainState(NamedTuple):
    """Per-seed training state; every leaf has a leading seed axis ``S``.

    ``env_state`` leaves are ``[S, num_envs, ...]``, sharded over devices along
    the env axis; everything else is replicated.
    """

    params: types.Params  # {"policy": ..., "value": ...}
    opt_state: Any
    env_state: gymnax_env.EnvState
    kl_beta: jax.Array  # [S] float32, β of the KL-penalty objective (eq. 8)
    update_step: jax.Array  # [S] int32, updates done so far


class Batch(NamedTuple):
    """What one SGD step sees, ``[T', B', ...]`` (a minibatch of a rollout)."""

    obs: jax.Array
    action: jax.Array
    behaviour_log_prob: jax.Array
    behaviour_dist: Any
    behaviour_value: jax.Array
    advantage: jax.Array
    target: jax.Array  # λ-return


# Metrics summed over devices and updates (the rest are averaged).
SUM_METRICS = ("episodes", "episode_return_sum", "episode_length_sum")

STATE_SPECS = TrainState(
    params=P(), opt_state=P(), env_state=P(None, parallel.DATA_AXIS), kl_beta=P(), update_step=P()
)


class Learner:
    """Builds the compiled PPO step for a config, an environment and a mesh.

    Args:
      config: a validated ``PPOConfig``.
      mesh: a 1-D ``("data",)`` mesh; ``config.num_envs`` must divide across it.
      num_seeds: ``S``, independent runs vmapped in one program.
      env_params: optional gymnax ``EnvParams`` override.

    Raises:
      ConfigError: the config does not fit the mesh.
    """

    def __init__(self, config: config_lib.PPOConfig, mesh, num_seeds: int = 1, env_params=None):
        self.config = config.validate(mesh.size)
        self.mesh = mesh
        self.num_seeds = num_seeds
        self.num_devices = mesh.size
        self.local_envs = config.num_envs // mesh.size
        self.env = gymnax_env.GymnaxEnv(config.env, config.num_envs, env_params)
        self.dist = distributions.for_action_space(self.env.action_space)
        obs_ndim = len(self.env.obs_shape)
        self.policy_net = networks.PolicyNetwork(
            config.hidden_sizes, self.env.action_dim, self.dist.discrete, config.activation,
            obs_ndim=obs_ndim,
        )
        self.value_net = networks.ValueNetwork(config.hidden_sizes, config.activation, obs_ndim)
        num_sgd_steps = config.num_updates * config.num_epochs * config.num_minibatches
        lr = (
            optax.linear_schedule(config.lr, 0.0, num_sgd_steps) if config.anneal_lr else config.lr
        )
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5)
        )
        self.state_shardings = jax.tree.map(
            lambda spec: NamedSharding(mesh, spec), STATE_SPECS,
            is_leaf=lambda x: isinstance(x, P),
        )
        self.acting = rollout_lib.Policy(
            self.policy, self.dist.noise, self.dist.sample_from_noise, self.dist.log_prob,
            self.env.action_dim,
        )
        self.init = jax.jit(self._init, out_shardings=self.state_shardings)
        self.update = self.make_train_chunk(1)

    # ---------------------------------------------------------------- acting
    def policy(self, params: types.Params, obs: jax.Array) -> Any:
        """Distribution parameters of π(·|obs) for ``obs`` ``[..., *obs_shape]``."""
        return self.policy_net.apply(params["policy"], obs)

    def value(self, params: types.Params, obs: jax.Array) -> jax.Array:
        """V(obs), ``[...]`` float32."""
        return self.value_net.apply(params["value"], obs)

    # ---------------------------------------------------------------- init
    def _init_one(self, key: jax.Array) -> TrainState:
        policy_key, value_key, env_key = jax.random.split(key, 3)
        dummy_obs = jnp.zeros(self.env.obs_shape, jnp.float32)
        params = {
            "policy": self.policy_net.init(policy_key, dummy_obs),
            "value": self.value_net.init(value_key, dummy_obs),
        }
        env_ids = jnp.arange(self.config.num_envs)
        reset_keys = jax.vmap(jax.random.fold_in, (None, 0))(env_key, env_ids)
        return TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            env_state=self.env.reset(reset_keys),
            kl_beta=jnp.asarray(self.config.kl_beta_init, jnp.float32),
            update_step=jnp.zeros((), jnp.int32),
        )

    def _init(self, seed_keys: jax.Array) -> TrainState:
        return jax.vmap(self._init_one)(seed_keys)

    # ---------------------------------------------------------------- update
    def _loss(self, params, batch: Batch, advantage: jax.Array, kl_beta: jax.Array):
        cfg = self.config
        dist = self.policy(params, batch.obs)
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
            self.value(params, batch.obs),
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

    def _sgd_step(self, carry, batch: Batch):
        params, opt_state, kl_beta = carry
        advantage = batch.advantage
        if self.config.normalize_advantages:
            advantage = losses.normalize_advantages(advantage, parallel.DATA_AXIS)
        grads, metrics = jax.grad(self._loss, has_aux=True)(params, batch, advantage, kl_beta)
        grads = parallel.pmean(grads)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["opt/grad_norm"] = optax.tree.norm(grads)
        return (params, opt_state, kl_beta), parallel.pmean(metrics)

    def _minibatches(self, batch: Batch, key: jax.Array, env_ids: jax.Array) -> Batch:
        """Shuffles time per env and cuts ``[T, B_local]`` into ``[M, T/t, B_local/g]``."""
        cfg = self.config
        t_len, b_local = cfg.rollout_len, self.local_envs
        time_chunks, env_groups = cfg.minibatch_layout()
        env_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, env_ids)
        perm = jax.vmap(lambda k: jax.random.permutation(k, t_len))(env_keys).T  # [T, B]

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

    def _local_update(self, state: TrainState, key: jax.Array):
        """One update on this device's envs for one seed (inside shard_map and vmap)."""
        cfg = self.config
        key = jax.random.fold_in(key, state.update_step)
        rollout_key, sgd_key = jax.random.split(key)
        env_ids = parallel.axis_index() * self.local_envs + jnp.arange(self.local_envs)
        params = state.params

        env_state, traj, episodes = rollout_lib.rollout(
            self.env, self.acting, params, state.env_state, rollout_key, env_ids, cfg.rollout_len,
        )
        # Values of x_t and of the true successors x'_{t+1} in one batched call.
        all_values = self.value(params, jnp.concatenate([traj.obs, traj.next_obs], axis=0))
        values, next_values = jnp.split(all_values, 2, axis=0)
        discounts = cfg.gamma * (1.0 - traj.terminated.astype(jnp.float32))
        advantages, targets = losses.gae(
            traj.reward, values, next_values, discounts, traj.truncated, cfg.gae_lambda
        )
        batch = Batch(
            traj.obs, traj.action, traj.behaviour_log_prob, traj.behaviour_dist,
            values, advantages, targets,
        )

        def epoch(carry, epoch_key):
            return jax.lax.scan(self._sgd_step, carry, self._minibatches(batch, epoch_key, env_ids))

        (params, opt_state, kl_beta), metrics = jax.lax.scan(
            epoch,
            (params, state.opt_state, state.kl_beta),
            jax.random.split(sgd_key, cfg.num_epochs),
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        if cfg.objective == "kl":
            kl_beta = losses.adapt_kl_beta(kl_beta, metrics["ppo/kl"], cfg.kl_target)
        metrics["ppo/kl_beta"] = kl_beta
        metrics["value/mean"] = parallel.pmean(jnp.mean(values))
        totals = parallel.psum(episodes)
        metrics.update(
            episodes=totals.count,
            episode_return_sum=totals.returns,
            episode_length_sum=totals.lengths,
        )
        new_state = TrainState(params, opt_state, env_state, kl_beta, state.update_step + 1)
        return new_state, metrics

    def make_train_chunk(self, num_updates: int) -> Callable:
        """A jitted ``(state, key[S]) -> (state, metrics)`` running ``num_updates`` updates.

        Metrics are reduced on device over the updates: ``SUM_METRICS`` are summed,
        the rest averaged, all with a leading seed axis ``[S]``. The input state is
        donated.
        """

        def local_chunk(state, key):
            def body(carry, _):
                return self._local_update(carry, key)

            state, metrics = jax.lax.scan(body, state, None, length=num_updates)
            reduced = {
                k: jnp.sum(v) if k in SUM_METRICS else jnp.mean(v) for k, v in metrics.items()
            }
            return state, reduced

        sharded = parallel.shard_map(
            jax.vmap(local_chunk),
            self.mesh,
            in_specs=(STATE_SPECS, P()),
            out_specs=(STATE_SPECS, P()),
        )
        return jax.jit(sharded, donate_argnums=0)

    def seed_keys(self, seed: int) -> tuple[jax.Array, jax.Array]:
        """``(init_keys[S], train_keys[S])``: seed ``i`` of a run does not depend on ``S``."""
        base = jax.random.key(seed)
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base, i)))(
            jnp.arange(self.num_seeds)
        )
        return keys[:, 0], keys[:, 1]
