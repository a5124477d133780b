"""The part every on-device ("Anakin") learner shares.

An agent subclasses ``OnDeviceLearner`` and writes one method,
``_local_update(state, key) -> (state, metrics)``: one update for one seed on
this device's environments, inside ``jax.shard_map`` (gradients averaged with
``parallel.pmean``) and ``jax.vmap`` over seeds. This class builds the
environment, networks and optimizer, the sharded initial state, and the jitted
program that scans ``K`` updates per host call.

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

from jaxrl_dist import compile_options, distributions, errors, networks, parallel, types
from jaxrl_dist.actors import rollout as rollout_lib
from jaxrl_dist.agents import common
from jaxrl_dist.envs import gymnax_env


class TrainState(NamedTuple):
    """Per-seed training state; every leaf has a leading seed axis ``S``.

    ``env_state`` leaves are ``[S, num_envs, ...]``, sharded over devices along
    the env axis; everything else is replicated.
    """

    params: types.Params  # {"policy": ..., "value": ...}
    opt_state: Any
    env_state: gymnax_env.EnvState
    update_step: jax.Array  # [S] int32, updates done so far
    agent_state: Any  # the agent's own (PPO: KL β; IMPALA: lagged behaviour params)


# Metrics summed over devices and updates (the rest are averaged).
SUM_METRICS = ("episodes", "episode_return_sum", "episode_length_sum")

# Guards computed with every chunk (not logged): the first update of the chunk with
# a non-finite metric (-1: none), and whether every parameter is finite after it.
NONFINITE_UPDATE = "guard/nonfinite_update"
PARAMS_FINITE = "guard/params_finite"
GUARD_METRICS = (NONFINITE_UPDATE, PARAMS_FINITE)

STATE_SPECS = TrainState(
    params=P(), opt_state=P(), env_state=P(None, parallel.DATA_AXIS), update_step=P(),
    agent_state=P(),
)


class OnDeviceLearner:
    """Builds an agent's compiled update for a config, an environment and a mesh.

    Args:
      config: an ``OnDeviceConfig`` subclass (validated here).
      mesh: a 1-D ``("data",)`` mesh; ``config.num_envs`` must divide across it.
      num_seeds: ``S``, independent runs vmapped in one program.
      env_params: optional gymnax ``EnvParams`` override.
      env: optional environment description used instead of building the gymnax
        env (host actors pass a ``gymnasium_env.EnvSpec``: only the learning
        step, ``learn``, is then usable, not ``init``/``update``).

    Attributes:
      init: jitted ``(init_keys [S]) -> TrainState`` (sharded).
      update: jitted ``(state, train_keys [S]) -> (state, metrics)``, one update.

    Raises:
      ConfigError: the config does not fit the mesh.
    """

    def __init__(
        self, config: common.OnDeviceConfig, mesh, num_seeds: int = 1, env_params=None,
        env=None,
    ):
        self.config = config.validate(mesh.size)
        self.mesh = mesh
        self.platform = mesh.devices.flat[0].platform  # picks compile_options
        self.num_seeds = num_seeds
        self.num_devices = mesh.size
        self.local_envs = config.num_envs // mesh.size
        self.env = env if env is not None else gymnax_env.GymnaxEnv(
            config.env, config.num_envs, env_params
        )
        self.dist = distributions.for_action_space(self.env.action_space)
        obs_ndim = len(self.env.obs_shape)
        if config.torso == "cnn" and obs_ndim != 3:
            raise errors.ConfigError(
                f"--torso=cnn needs image observations [H, W, C]; --env={config.env} has "
                f"shape {tuple(self.env.obs_shape)}"
            )
        self._build_networks(obs_ndim)
        # The update rule acts on ONE flat vector of all parameters: on CPU every
        # parameter leaf would otherwise cost its own few small kernels per step.
        self.flat_optimizer = self._make_optimizer()
        self.optimizer = optax.flatten(self.flat_optimizer)
        self.state_specs = STATE_SPECS._replace(agent_state=self.agent_state_specs(seed_axis=True))
        self.state_shardings = jax.tree.map(
            lambda spec: NamedSharding(mesh, spec), self.state_specs,
            is_leaf=lambda x: isinstance(x, P),
        )
        self.acting = rollout_lib.Policy(
            self.policy, self.dist.noise, self.dist.sample_from_noise, self.dist.log_prob,
            self.env.action_dim,
        )
        self.init = jax.jit(
            self._init, out_shardings=self.state_shardings,
            compiler_options=compile_options.run_once(self.platform),
        )
        self.update = self.make_train_chunk(1)

    # ------------------------------------------------------------ to override
    def _local_update(self, state: TrainState, key: jax.Array) -> tuple[TrainState, dict]:
        """One update for one seed on this device's envs (inside shard_map and vmap)."""
        raise NotImplementedError

    def learn(self, params, opt_state, agent_state, traj: types.Transition, key, env_ids):
        """The learning half of an update, on a trajectory from any actor.

        Runs inside ``shard_map`` over the data axis (gradients averaged with
        ``pmean``), for one seed. Shared by the on-device update (after its
        rollout) and the host-actor learner (on a batch from the queues).

        Args:
          params, opt_state, agent_state: the learner's state before the update.
          traj: ``Transition`` ``[T, B_local, ...]`` of this device's environments.
          key: PRNG key of this update (the same on every device).
          env_ids: ``[B_local]`` int32 global indices of the trajectory's environments.

        Returns:
          ``(params, opt_state, agent_state, metrics)``; metrics are scalars, already
          averaged over the mesh.
        """
        raise NotImplementedError

    def _build_networks(self, obs_ndim: int) -> None:
        """Creates the agent's flax modules (default: separate policy and value MLPs)."""
        config = self.config
        self.policy_net = networks.PolicyNetwork(
            config.hidden_sizes, self.env.action_dim, self.dist.discrete, config.activation,
            obs_ndim=obs_ndim, torso=config.torso,
        )
        self.value_net = networks.ValueNetwork(
            config.hidden_sizes, config.activation, obs_ndim, torso=config.torso
        )

    def agent_state_specs(self, seed_axis: bool) -> Any:
        """``PartitionSpec`` (or a pytree prefix of them) of ``agent_state`` over the mesh.

        Default ``P()``: replicated. ``seed_axis``: the on-device state has a leading
        seed axis (the host learner's has none). Ape-X shards its replay here.
        """
        del seed_axis
        return P()

    def host_act_fn(self) -> Callable:
        """For host actor threads: a jitted ``(params, obs [B, ...], key, env_ids [B]) ->
        (action, log_prob, dist_params, next_key)`` sampling from the policy."""
        dist, action_dim = self.dist, self.env.action_dim

        def act(params, obs, key, env_ids):
            del env_ids
            key, noise_key = jax.random.split(key)
            dist_params = self.policy(params, obs)
            noise = dist.noise(noise_key, obs.shape[:1], action_dim)
            action = dist.sample_from_noise(dist_params, noise)
            return action, dist.log_prob(dist_params, action), dist_params, key

        return jax.jit(act)

    # For host actors: ``(params, traj [T, B, ...], env_ids [B]) -> batch`` run on the
    # actor device before sending (Ape-X: n-step transitions and priorities), or None
    # to send the raw ``Transition``.
    actor_batch: Callable | None = None

    def _init_agent_state(self, params: types.Params) -> Any:
        """The agent's own initial state for one seed (default: none)."""
        del params
        return ()

    def _optimizer_steps(self) -> int:
        """Optimizer steps over the whole run (the horizon of learning-rate annealing)."""
        return self.config.num_updates

    # ---------------------------------------------------------------- pieces
    def _make_optimizer(self) -> optax.GradientTransformation:
        cfg = self.config
        lr = cfg.lr
        if cfg.anneal_lr:
            lr = optax.linear_schedule(cfg.lr, 0.0, self._optimizer_steps())
        if cfg.optimizer == "adam":
            opt = optax.adam(lr, eps=cfg.opt_eps)
        else:
            opt = optax.rmsprop(lr, decay=0.99, eps=cfg.opt_eps)
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), opt)

    def policy(self, params: types.Params, obs: jax.Array) -> Any:
        """Distribution parameters of π(·|obs) for ``obs`` ``[..., *obs_shape]``."""
        return self.policy_net.apply(params["policy"], obs)

    def value(self, params: types.Params, obs: jax.Array) -> jax.Array:
        """V(obs), ``[...]`` float32."""
        return self.value_net.apply(params["value"], obs)

    def local_env_ids(self) -> jax.Array:
        """``[B_local]`` global indices of this device's environments (inside shard_map)."""
        return parallel.axis_index() * self.local_envs + jnp.arange(self.local_envs)

    def rollout(self, acting_params, env_state, key, env_ids):
        """``(env_state, traj [T, B_local, ...], metrics)`` acting with ``acting_params``.

        ``metrics`` holds the episode sums of ``SUM_METRICS``, summed over devices.
        """
        env_state, traj, episodes = rollout_lib.rollout(
            self.env, self.acting, acting_params, env_state, key, env_ids,
            self.config.rollout_len,
        )
        totals = parallel.psum(episodes)
        metrics = {
            "episodes": totals.count,
            "episode_return_sum": totals.returns,
            "episode_length_sum": totals.lengths,
        }
        return env_state, traj, metrics

    def values_and_next_values(self, params, traj: types.Transition):
        """``V(x_t)`` and ``V(x'_{t+1})`` (the true, pre-reset successor) in one batched call."""
        all_values = self.value(params, jnp.concatenate([traj.obs, traj.next_obs], axis=0))
        return jnp.split(all_values, 2, axis=0)

    def discounts(self, traj: types.Transition) -> jax.Array:
        """``γ_t = γ·(1 − terminated_t)``: termination stops bootstrapping, truncation does not."""
        return self.config.gamma * (1.0 - traj.terminated.astype(jnp.float32))

    # ------------------------------------------------------------------ init
    def init_params(self, key: jax.Array) -> types.Params:
        """Fresh ``{"policy", "value"}`` parameters for one seed."""
        policy_key, value_key, _ = jax.random.split(key, 3)
        dummy_obs = jnp.zeros(self.env.obs_shape, jnp.float32)
        return {
            "policy": self.policy_net.init(policy_key, dummy_obs),
            "value": self.value_net.init(value_key, dummy_obs),
        }

    def _init_one(self, key: jax.Array) -> TrainState:
        params = self.init_params(key)
        env_key = jax.random.split(key, 3)[2]
        env_ids = jnp.arange(self.config.num_envs)
        reset_keys = jax.vmap(jax.random.fold_in, (None, 0))(env_key, env_ids)
        return TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            env_state=self.env.reset(reset_keys),
            update_step=jnp.zeros((), jnp.int32),
            agent_state=self._init_agent_state(params),
        )

    def _init(self, seed_keys: jax.Array) -> TrainState:
        return jax.vmap(self._init_one)(seed_keys)

    # ----------------------------------------------------------- the program
    def make_train_chunk(self, num_updates: int, quick: bool = False) -> Callable:
        """A jitted ``(state, key[S]) -> (state, metrics)`` running ``num_updates`` updates.

        ``quick``: compile with ``compile_options.training(quick=True)`` (faster
        compile, slower steps on CPU).

        Metrics are reduced on device over the updates: ``SUM_METRICS`` are summed,
        the rest averaged, all with a leading seed axis ``[S]``; ``GUARD_METRICS``
        say which update first had a non-finite metric and whether the final
        parameters are finite. The input state is donated.
        """

        def local_chunk(state, key):
            def body(carry, _):
                return self._local_update(carry, key)

            first_update = state.update_step
            state, metrics = jax.lax.scan(body, state, None, length=num_updates)
            reduced = {
                k: jnp.sum(v) if k in SUM_METRICS else jnp.mean(v) for k, v in metrics.items()
            }
            finite = jnp.stack([
                jnp.isfinite(v) for v in metrics.values()
                if jnp.issubdtype(v.dtype, jnp.floating)
            ]).all(axis=0)  # [num_updates]
            reduced[NONFINITE_UPDATE] = jnp.where(
                finite.all(), -1, first_update + 1 + jnp.argmin(finite)
            ).astype(jnp.int32)
            reduced[PARAMS_FINITE] = jnp.all(jnp.stack([
                jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params)
            ]))
            return state, reduced

        sharded = parallel.shard_map(
            jax.vmap(local_chunk),
            self.mesh,
            in_specs=(self.state_specs, P()),
            out_specs=(self.state_specs, P()),
        )
        return jax.jit(
            sharded, donate_argnums=0,
            compiler_options=compile_options.training(self.platform, quick),
        )

    def seed_keys(self, seed: int) -> tuple[jax.Array, jax.Array]:
        """``(init_keys[S], train_keys[S])``: seed ``i`` of a run does not depend on ``S``."""

        def split(seed):
            base = jax.random.key(seed)
            keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base, i)))(
                jnp.arange(self.num_seeds)
            )
            return keys[:, 0], keys[:, 1]

        # One small program instead of a dozen op-by-op compiles (~0.5 s on CPU).
        return jax.jit(split, compiler_options=compile_options.run_once(self.platform))(seed)
