"""The on-device ("Anakin") program: an agent's update with gymnax envs, in one program.

``OnDeviceLearner`` builds any agent (``agents.make_agent``) for the mesh, the
batched gymnax environment, the sharded initial state, and the jitted program
that scans ``K`` updates per host call, each one ``update`` (the ONE on-device
update, composed from the agent's pure functions) for one seed on this device's
environments, inside ``jax.shard_map`` (gradients averaged inside the agent's
``learn``) and ``jax.vmap`` over seeds.

Randomness of update ``u`` is ``fold_in(key, u)`` further folded with *global*
environment indices, so results do not depend on the number of devices nor on
how many updates are scanned per host call.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_dist import agents, parallel, tuning, types
from jaxrl_dist.agents import base, common
from jaxrl_dist.anakin import rollout as rollout_lib
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


def update(agent: base.Agent, state: TrainState, key: jax.Array, env_ids: jax.Array,
           rollout: Callable) -> tuple[TrainState, dict[str, jax.Array]]:
    """One on-device update of one seed: act, the actor's batch, learn.

    Args:
      agent: the ``base.Agent`` (its ``update_keys``, ``acting_params``, ``actor_batch``,
        ``learn`` and ``next_agent_state``).
      state: the seed's ``TrainState`` (no seed axis).
      key: the run's training key (the same on every device); update ``u`` uses
        ``fold_in(key, u)``.
      env_ids: ``[B_local]`` int32 global indices of this device's envs.
      rollout: ``(acting_params, env_state, key, env_ids) -> (env_state, traj
        [T, B_local, ...], episode metrics)``.

    Returns:
      ``(state, metrics)``: scalar metrics, already averaged over the mesh.
    """
    key = jax.random.fold_in(key, state.update_step)
    rollout_key, learn_key = agent.update_keys(key)
    acting_params = agent.acting_params(state.params, state.agent_state, env_ids)
    env_state, traj, episode_metrics = rollout(
        acting_params, state.env_state, rollout_key, env_ids
    )
    batch = traj if agent.actor_batch is None else agent.actor_batch(
        state.params, traj, env_ids)
    params, opt_state, learned, metrics = agent.learn(
        state.params, state.opt_state, state.agent_state, batch, learn_key, env_ids
    )
    metrics.update(episode_metrics)
    agent_state = agent.next_agent_state(state.params, state.agent_state, learned)
    return TrainState(params, opt_state, env_state, state.update_step + 1, agent_state), metrics


class OnDeviceLearner:
    """Builds an agent's compiled on-device update for a config, a gymnax env and a mesh.

    Args:
      config: the agent's config (validated here).
      mesh: a 1-D ``("data",)`` mesh; ``config.num_envs`` must divide across it.
      num_seeds: ``S``, independent runs vmapped in one program.
      env_params: optional gymnax ``EnvParams`` override.
      tuning_: how programs are built (default ``tuning.for_mesh(mesh)``).

    Attributes:
      agent: the ``base.Agent``.
      env: the batched ``gymnax_env.GymnaxEnv``.
      init: jitted ``(init_keys [S]) -> TrainState`` (sharded).
      update: jitted ``(state, train_keys [S]) -> (state, metrics)``, one update.

    Raises:
      ConfigError: the config does not fit the mesh or the env, or the agent has no
        on-device path (``agents.check_on_device``).
    """

    def __init__(self, config: common.OnDeviceConfig, mesh, num_seeds: int = 1,
                 env_params=None, tuning_: tuning.Tuning | None = None):
        self.tuning = tuning_ or tuning.for_mesh(mesh)
        self.mesh = mesh
        self.num_seeds = num_seeds
        agents.check_on_device(config.agent)
        self.env = gymnax_env.GymnaxEnv(config.env, config.num_envs, env_params)
        self.agent = agents.make_agent(config, self.env, mesh.size, self.tuning)
        self.config = self.agent.config
        self.dist = self.agent.dist
        self.local_envs = self.agent.local_envs
        self.state_specs = STATE_SPECS._replace(
            agent_state=self.agent.agent_state_specs(seed_axis=True)
        )
        self.state_shardings = jax.tree.map(
            lambda spec: NamedSharding(mesh, spec), self.state_specs,
            is_leaf=lambda x: isinstance(x, P),
        )
        self.init = jax.jit(
            self._init, out_shardings=self.state_shardings,
            compiler_options=self.tuning.run_once_options(),
        )
        self.update = self.make_train_chunk(1)

    def policy(self, params: types.Params, obs: jax.Array) -> Any:
        """The agent's policy (distribution parameters for ``obs``)."""
        return self.agent.policy(params, obs)

    def local_env_ids(self) -> jax.Array:
        """``[B_local]`` global indices of this device's environments (inside shard_map)."""
        return parallel.axis_index() * self.local_envs + jnp.arange(self.local_envs)

    def rollout(self, acting_params, env_state, key, env_ids):
        """``(env_state, traj [T, B_local, ...], metrics)`` acting with ``acting_params``.

        ``metrics`` holds the episode sums of ``SUM_METRICS``, summed over devices.
        """
        env_state, traj, episodes = rollout_lib.rollout(
            self.env, self.agent.acting, acting_params, env_state, key, env_ids,
            self.config.rollout_len,
        )
        totals = parallel.psum(episodes)
        metrics = {
            "episodes": totals.count,
            "episode_return_sum": totals.returns,
            "episode_length_sum": totals.lengths,
        }
        return env_state, traj, metrics

    def _local_update(self, state: TrainState, key: jax.Array):
        return update(self.agent, state, key, self.local_env_ids(), self.rollout)

    # ------------------------------------------------------------------ init
    def _init_one(self, key: jax.Array) -> TrainState:
        params = self.agent.init_params(key)
        env_key = jax.random.split(key, 3)[2]
        env_ids = jnp.arange(self.config.num_envs)
        reset_keys = jax.vmap(jax.random.fold_in, (None, 0))(env_key, env_ids)
        return TrainState(
            params=params,
            opt_state=self.agent.optimizer.init(params),
            env_state=self.env.reset(reset_keys),
            update_step=jnp.zeros((), jnp.int32),
            agent_state=self.agent.init_agent_state(params),
        )

    def _init(self, seed_keys: jax.Array) -> TrainState:
        return jax.vmap(self._init_one)(seed_keys)

    # ----------------------------------------------------------- the program
    def make_train_chunk(self, num_updates: int, tier: str = "optimized") -> Callable:
        """A jitted ``(state, key[S]) -> (state, metrics)`` running ``num_updates`` updates.

        ``tier``: a ``--chunk_compile`` tier as ``tuning.Tuning.chunk_tier`` resolves it
        (only CPU tells them apart).

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
            sharded, donate_argnums=0, compiler_options=self.tuning.training_options(tier),
        )

    def seed_keys(self, seed: int) -> tuple[jax.Array, jax.Array]:
        """``(init_keys[S], train_keys[S])``: seed ``i`` of a run does not depend on ``S``."""

        def split(seed):
            base_key = jax.random.key(seed)
            keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base_key, i)))(
                jnp.arange(self.num_seeds)
            )
            return keys[:, 0], keys[:, 1]

        # One small program instead of a dozen op-by-op compiles.
        return jax.jit(split, compiler_options=self.tuning.run_once_options())(seed)
