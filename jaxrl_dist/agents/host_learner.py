"""The learner of the host-actor path: an agent's ``learn`` on batches from actor threads.

The agent (PPO, IMPALA, A2C) is the same class as on device, built with an
``EnvSpec`` instead of a gymnax env; only its ``learn`` half is used. One
compiled step ``update(state, trajs, key) -> (state, metrics)`` takes one
rollout from each actor thread (each ``[T, B_thread, ...]``, env axis sharded
over the learner mesh), joins them along the env axis on each device, and runs
``learn`` inside ``jax.shard_map`` (gradients averaged with ``pmean``; params
replicated on every learner device).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_dist import agents, parallel, types
from jaxrl_dist.envs import gymnasium_env


class HostState(NamedTuple):
    """Learner state (replicated over the learner mesh); no seed axis, no env state."""

    params: types.Params
    opt_state: Any
    agent_state: Any
    update_step: jax.Array  # int32 scalar: updates done = version of ``params``


TRAJ_SPEC = P(None, parallel.DATA_AXIS)  # [T, B, ...]: envs split over learner devices


class HostLearner:
    """Builds ``init`` and the compiled ``update`` of ``config.agent`` on ``mesh``.

    Args:
      config: the agent's config; ``num_envs`` is the number of envs over all
        actor threads and must divide across ``mesh``.
      mesh: the learner mesh (1-D, ``("data",)``).
      spec: the environment's ``EnvSpec``.

    Attributes:
      agent: the agent's learner (networks, distribution, ``learn``).
      traj_sharding: ``NamedSharding`` actors put trajectory leaves with.
      init: jitted ``key -> HostState`` (replicated).
      update: jitted ``(state, trajs: tuple of Transition, key) -> (state, metrics)``.

    Raises:
      ConfigError: the config does not fit the mesh.
    """

    def __init__(self, config, mesh, spec: gymnasium_env.EnvSpec):
        self.config = config
        self.mesh = mesh
        self.agent = agents.make_learner(config, mesh, 1, env=spec)
        self.replicated = NamedSharding(mesh, P())
        self.traj_sharding = NamedSharding(mesh, TRAJ_SPEC)
        self.init = jax.jit(self._init, out_shardings=self.replicated)
        self.update = jax.jit(
            parallel.shard_map(
                self._local_update, mesh, in_specs=(P(), TRAJ_SPEC, P()), out_specs=(P(), P())
            )
        )

    def _init(self, key: jax.Array) -> HostState:
        params = self.agent.init_params(key)
        return HostState(
            params=params,
            opt_state=self.agent.optimizer.init(params),
            agent_state=self.agent._init_agent_state(params),
            update_step=jnp.zeros((), jnp.int32),
        )

    def _local_update(self, state: HostState, trajs: tuple, key: jax.Array):
        traj = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *trajs)
        local_envs = traj.reward.shape[1]
        env_ids = parallel.axis_index() * local_envs + jnp.arange(local_envs)
        key = jax.random.fold_in(key, state.update_step)
        params, opt_state, agent_state, metrics = self.agent.learn(
            state.params, state.opt_state, state.agent_state, traj, key, env_ids
        )
        return HostState(params, opt_state, agent_state, state.update_step + 1), metrics
