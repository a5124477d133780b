"""Ape-X DQN's learner: ε-ladder actors, actor-side priorities, prioritized replay, double-Q.

One compiled update (on device, inside ``shard_map`` and ``vmap`` over seeds):

1. *Actors*: every env acts ``T`` steps ε-greedily with the current parameters,
   env ``i`` of ``N`` with its own ``ε_i`` (``epsilons``).
2. *Actor-side priorities* (``actor_batch``): the rollout becomes n-step
   transitions ``(s_t, a_t, G_t, Γ_t, s_{t+m})`` (``losses.n_step_returns``:
   termination stops bootstrapping, truncation does not, ``m`` shrinks at the
   rollout's end) with priorities ``|δ_t|`` from the actor's own network,
   as in Ape-X, not the running maximum.
3. *Learner* (``learn``): the transitions enter this device's replay shard;
   then ``learner_steps`` times: sample a prioritized batch, Huber loss on the
   n-step double-Q TD errors weighted by importance weights, gradients averaged
   over devices (``pmean``), optimizer step, new priorities ``|δ| + ε`` written
   back, target network refreshed every ``target_update_period`` learner steps.

The host-actor path runs step 2 in the actor threads (``act``,
``actor_batch`` on the actor device) and step 3 in ``sebulba.learner.HostLearner``.

The replay is sharded: each device holds ``buffer_capacity / D`` transitions of
its own environments and samples ``batch_size / D`` of them per step. For stacked
frames (``frame_stack_replay``) each shard stores each frame once
(``replay.frame_stack``) and rebuilds ``obs``/``next_obs`` when sampling.
"""

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxrl_dist import errors, losses, parallel, types
from jaxrl_dist.agents import base
from jaxrl_dist.agents.apex import config as config_lib
from jaxrl_dist.nn import distributions, networks
from jaxrl_dist.replay import frame_stack, prioritized


class ReplayItem(NamedTuple):
    """One n-step transition; leaves ``[...]`` with the batch axes in front.

    ``obs`` ``[*obs_shape]`` s_t; ``action`` int32 a_t; ``reward`` float32 the
    n-step return ``G_t``; ``discount`` float32 ``Γ_t`` (0 after termination);
    ``next_obs`` ``[*obs_shape]`` the bootstrap state ``s_{t+m}``.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array


class ActorBatch(NamedTuple):
    """What actors send to the learner: ``items`` (leaves ``[T, B, ...]``) and
    their initial ``priorities`` ``[T, B]`` float32 (``|δ| + priority_eps``)."""

    items: ReplayItem
    priorities: jax.Array


class ApexState(NamedTuple):
    """The agent's own state: the replay shard, the target network, learner steps done.

    On the mesh, ``replay`` leaves are sharded along their first (slot) axis,
    ``position``/``size`` hold one entry per device; the rest is replicated.
    """

    replay: prioritized.ReplayState | frame_stack.FrameReplayState
    target_params: types.Params
    learner_steps: jax.Array  # int32 scalar


def epsilons(env_ids: jax.Array, num_envs: int, epsilon: float, alpha: float) -> jax.Array:
    """Ape-X's exploration ladder ``ε_i = ε^(1 + α·i/(N−1))`` (Horgan et al. 2018, sec. 4).

    Args:
      env_ids: ``[B]`` int32 global env (actor) indices ``i`` in ``0..N−1``.
      num_envs: ``N``; with ``N = 1`` every ε is ``epsilon``.
      epsilon, alpha: ``ε`` (0.4 in the paper) and ``α`` (7).

    Returns:
      ``[B]`` float32.
    """
    fraction = env_ids.astype(jnp.float32) / max(num_envs - 1, 1)
    return jnp.power(jnp.float32(epsilon), 1.0 + alpha * fraction)


class Agent(base.Agent):
    """Ape-X DQN (Horgan et al. 2018, arXiv 1803.00933, Algorithm 1 and 2) with a dueling
    network (Wang et al. 2016), n-step double-Q targets (van Hasselt et al. 2016) and
    proportional prioritized replay (Schaul et al. 2016).

    ``state.params`` is ``{"q": ...}``; ``state.agent_state`` an ``ApexState``.
    ``policy(params, obs)`` returns ``Q(obs, ·)`` (greedy evaluation takes its argmax).

    Args:
      config: an ``ApexConfig``.
      spec, num_devices, tuning_: as ``base.Agent``.

    Raises:
      ConfigError: the config does not fit the devices, or the action space is not discrete.
    """

    config: config_lib.ApexConfig

    def __init__(self, config, spec, num_devices=1, tuning_=None):
        super().__init__(config, spec, num_devices, tuning_)
        if not self.dist.discrete:
            raise errors.ConfigError(f"--agent=apex needs a discrete action space ({config.env})")
        self.greedy = distributions.EpsilonGreedy
        self.local_capacity = config.buffer_capacity // num_devices
        self.local_batch = config.batch_size // num_devices
        self.frame_replay = config_lib.frame_replay_on(config, spec)
        self.replay_lib = frame_stack if self.frame_replay else prioritized
        # uint8 pixels are stored as they come: the pixel torsos scale uint8 by 1/255.
        pixels = np.dtype(getattr(spec, "obs_dtype", np.float32)) == np.uint8
        self.obs_storage = jnp.dtype(
            "uint8" if self.frame_replay or pixels else config.obs_storage)
        self.acting = types.ActingFunctions(
            lambda p, obs: distributions.EpsGreedyParams(self.q_values(p[0], obs), p[1]),
            self.greedy.noise, self.greedy.sample_from_noise, self.greedy.log_prob,
            self.spec.action_dim,
        )

    # ------------------------------------------------------------- networks
    def _build_networks(self, obs_ndim: int) -> None:
        cfg = self.config
        self.q_net = networks.QNetwork(
            cfg.hidden_sizes, self.spec.action_dim, cfg.dueling, cfg.activation, obs_ndim,
            cfg.torso, self.tuning.dot_general, self.tuning.conv_general_dilated,
        )

    def q_values(self, params: types.Params, obs: jax.Array) -> jax.Array:
        """``Q(obs, ·)`` ``[..., A]`` float32 for ``obs`` ``[..., *obs_shape]``."""
        return self.q_net.apply(params["q"], obs)

    def policy(self, params: types.Params, obs: jax.Array) -> jax.Array:
        """Action values: greedy acting/evaluation takes ``dist.mode`` (argmax) of them."""
        return self.q_values(params, obs)

    def init_params(self, key: jax.Array) -> types.Params:
        return {"q": self.q_net.init(key, jnp.zeros(self.spec.obs_shape, jnp.float32))}

    def warmup_updates(self) -> int:
        """Updates before the replay holds ``learning_starts`` transitions (no learning)."""
        cfg = self.config
        return min(-(-cfg.learning_starts // cfg.steps_per_update), cfg.num_updates)

    def optimizer_steps(self) -> int:
        cfg = self.config
        return max(1, (cfg.num_updates - self.warmup_updates() + 1) * cfg.learner_steps)

    # ------------------------------------------------------------ the state
    def agent_state_specs(self, seed_axis: bool) -> Any:
        sharded = P(None, parallel.DATA_AXIS) if seed_axis else P(parallel.DATA_AXIS)
        return ApexState(replay=sharded, target_params=P(), learner_steps=P())

    def _example_item(self) -> ReplayItem:
        obs = jnp.zeros(self.spec.obs_shape, self.obs_storage)
        zero = jnp.zeros((), jnp.float32)
        return ReplayItem(obs, jnp.zeros((), jnp.int32), zero, zero, obs)

    def init_agent_state(self, params: types.Params) -> ApexState:
        # The global view: one replay shard per device, laid end to end.
        if self.frame_replay:
            shard = frame_stack.init(self._example_item(), self.local_capacity,
                                     self.config.rollout_len, self.local_envs,
                                     self.config.frame_replay_slack)
        else:
            shard = prioritized.init(self._example_item(), self.local_capacity)
        devices = self.num_devices
        replay = jax.tree.map(
            lambda x: jnp.zeros((devices * x.shape[0], *x.shape[1:]), x.dtype)
            if x.ndim else jnp.zeros((devices,), x.dtype),
            shard,
        )
        return ApexState(replay, params, jnp.zeros((), jnp.int32))

    # --------------------------------------------------------------- acting
    def act(self, params, obs, key, env_ids):
        """One ε-greedy acting step, env ``i`` with its ``ε_i`` (``epsilons``)."""
        cfg = self.config
        key, noise_key = jax.random.split(key)
        dist = distributions.EpsGreedyParams(
            self.q_values(params, obs),
            epsilons(env_ids, cfg.num_envs, cfg.epsilon, cfg.epsilon_alpha),
        )
        noise = self.greedy.noise(noise_key, obs.shape[:1], self.spec.action_dim)
        action = self.greedy.sample_from_noise(dist, noise)
        return action, self.greedy.log_prob(dist, action), dist, key

    def actor_batch(self, params: types.Params, traj: types.Transition, env_ids=None):
        """n-step transitions and their initial priorities from an actor's rollout.

        Args:
          params: the actor's parameters (its own, possibly stale, copy).
          traj: ``Transition`` ``[T, B, ...]``; ``behaviour_dist.q`` holds ``Q(s_t, ·)``
            as computed while acting.
          env_ids: unused (the signature of a host actor's finishing step).

        Returns:
          ``ActorBatch`` with leaves ``[T, B, ...]``. Priorities are
          ``|G_t + Γ_t Q(s_{t+m}, argmax Q(s_{t+m})) − Q(s_t, a_t)| + priority_eps``
          with the actor's network in both roles (Ape-X actors hold no target net).
        """
        del env_ids
        cfg = self.config
        discounts = self.discounts(traj)
        returns, bootstrap_discounts, steps = losses.n_step_returns(
            self.rewards(traj), discounts, traj.truncated, cfg.n_step
        )
        gather = lambda x: jnp.take_along_axis(
            x, steps.reshape(steps.shape + (1,) * (x.ndim - 2)), axis=0
        )
        next_obs = gather(traj.next_obs)
        q_next = self.q_values(params, next_obs)
        flat = lambda x: x.reshape((-1,) + x.shape[2:])
        td = losses.double_q_td_error(
            flat(traj.behaviour_dist.q), flat(traj.action), flat(returns),
            flat(bootstrap_discounts), flat(q_next), flat(q_next),
        )
        storage = self.obs_storage
        items = ReplayItem(
            traj.obs.astype(storage), traj.action.astype(jnp.int32), returns,
            bootstrap_discounts, next_obs.astype(storage),
        )
        priorities = (jnp.abs(td) + cfg.priority_eps).reshape(returns.shape)
        return ActorBatch(items, priorities)

    # -------------------------------------------------------------- learning
    def _beta(self, learning_update: jax.Array) -> jax.Array:
        """β for the ``learning_update``-th update that learns (0 at the first, after the
        warm-up): annealed linearly so that the run's last update uses ``priority_beta_end``
        (the first learning update is the one whose add fills the replay to
        ``learning_starts``, so ``num_updates - warm-up + 1`` of them learn)."""
        cfg = self.config
        last = max(cfg.num_updates - self.warmup_updates(), 1)
        fraction = jnp.minimum(learning_update.astype(jnp.float32) / last, 1.0)
        return cfg.priority_beta + fraction * (cfg.priority_beta_end - cfg.priority_beta)

    def _loss(self, params, target_params, items: ReplayItem, weights):
        # Stored dtype as is: the torsos cast (uint8 pixels are scaled by the pixel torsos).
        obs = jnp.concatenate([items.obs, items.next_obs])
        q_tm1, q_t_online = jnp.split(self.q_values(params, obs), 2)
        q_t_target = self.q_values(target_params, items.next_obs)
        td = losses.double_q_td_error(
            q_tm1, items.action, items.reward, items.discount, q_t_target, q_t_online
        )
        loss = jnp.mean(weights * losses.huber_loss(td))
        q_taken = jnp.take_along_axis(q_tm1, items.action[:, None], axis=-1)
        return loss, (td, jnp.mean(q_taken))

    def _learner_step(self, carry, key, beta, ready, storage, data_flags):
        cfg = self.config
        params, opt_state, state = carry
        # The storage is read-only here and stays out of the scan's carry (a carried
        # buffer of 1e5+ transitions is copied every iteration).
        replay = state.replay._replace(storage=storage)
        sample = self.replay_lib.sample(
            replay, jax.random.fold_in(key, parallel.axis_index()), self.local_batch, beta
        )
        # Importance weights normalised by their maximum over the *global* batch.
        log_w = -beta * jnp.log(replay.size.astype(jnp.float32) * sample.probabilities)
        weights = jnp.exp(log_w - jax.lax.pmax(jnp.max(log_w), parallel.DATA_AXIS))
        grads, (td, q_mean) = parallel.mean_grad(
            self._loss, params, state.target_params, sample.items, weights
        )
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        # Before learning starts the step changes nothing but the sampled priorities
        # (a select on the small params, not a branch: under vmap a cond copies the replay).
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ready, a, b), new, old)
        params = keep(optax.apply_updates(params, updates), params)
        opt_state = keep(new_opt_state, opt_state)
        replay = self.replay_lib.update_priorities(
            replay, sample.indices, jnp.abs(td) + cfg.priority_eps, cfg.priority_alpha
        )
        steps = state.learner_steps + ready.astype(jnp.int32)
        refresh = ready & (steps % cfg.target_update_period == 0)
        target = jax.tree.map(
            lambda new, old: jnp.where(refresh, new, old), params, state.target_params
        )
        loss = jnp.mean(weights * losses.huber_loss(td))
        metrics = parallel.pmean({
            "loss/td": loss,
            "td/abs_mean": jnp.mean(jnp.abs(td)),
            "q/mean": q_mean,
            "priority/is_weight_mean": jnp.mean(weights),
            **data_flags,  # the update's observations/rewards flags (local)
            **base.nonfinite_flags(loss=jnp.isfinite(loss), gradients=base.all_finite(grads),
                                   parameters=base.all_finite(params)),
        })
        metrics["opt/grad_norm"] = optax.tree.norm(grads)
        return (params, opt_state, ApexState(replay._replace(storage=()), target, steps)), metrics

    def learn(self, params, opt_state, agent_state: ApexState, batch: ActorBatch, key, env_ids):
        """Adds an ``ActorBatch`` (``[T, B_local]``) to the replay shard, then takes
        ``learner_steps`` prioritized double-Q steps once the replay holds
        ``learning_starts`` transitions (over all devices); before that
        ``learner/ready`` is 0 and only the sampled items' priorities change."""
        del env_ids
        cfg = self.config
        chex.assert_rank(batch.priorities, 2)
        # The local view of this device's shard: scalar position and size.
        params_finite = base.all_finite(params)
        data_flags = base.nonfinite_flags(
            observations=base.all_finite(batch.items.obs, batch.items.next_obs),
            rewards=base.all_finite(batch.items.reward),  # the n-step returns
        )
        replay = agent_state.replay
        replay = replay._replace(position=replay.position[0], size=replay.size[0])
        if self.frame_replay:  # [T, B]: trajectory b continues the last add's b
            replay = frame_stack.add(replay, batch.items, batch.priorities, cfg.priority_alpha)
        else:
            flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
            replay = prioritized.add(replay, flat.items, flat.priorities, cfg.priority_alpha)
        state = agent_state._replace(replay=replay)
        beta = self._beta(state.learner_steps // cfg.learner_steps)
        ready = parallel.psum(replay.size) >= cfg.learning_starts

        keys = jax.random.split(key, cfg.learner_steps)
        storage = replay.storage
        (params, opt_state, state), metrics = jax.lax.scan(
            lambda carry, k: self._learner_step(carry, k, beta, ready, storage, data_flags),
            (params, opt_state, state._replace(replay=replay._replace(storage=()))), keys,
        )
        state = state._replace(replay=state.replay._replace(storage=storage))
        step_flags = base.first_step_flags(metrics)  # [learner_steps] -> the first bad one's
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics.update(base.update_flags(params_finite, step_flags))
        metrics["learner/ready"] = ready.astype(jnp.float32)
        metrics["replay/size"] = parallel.psum(state.replay.size).astype(jnp.float32)
        if self.frame_replay:  # transitions stored unsampleable for lack of frame slots
            metrics["replay/dropped"] = parallel.psum(state.replay.book.dropped[0]).astype(
                jnp.float32
            )
        metrics["priority/beta"] = beta
        metrics["learner_steps"] = state.learner_steps.astype(jnp.float32)
        replay = state.replay
        state = state._replace(
            replay=replay._replace(position=replay.position[None], size=replay.size[None])
        )
        return params, opt_state, state, metrics

    def acting_params(self, params: types.Params, agent_state, env_ids):
        """``(params, ε [B_local])``: env ``i`` acts with its own ``ε_i`` (``epsilons``)."""
        del agent_state
        cfg = self.config
        return params, epsilons(env_ids, cfg.num_envs, cfg.epsilon, cfg.epsilon_alpha)
