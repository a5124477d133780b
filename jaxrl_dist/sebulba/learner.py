"""The learner of the host-actor path: an agent's ``learn`` on batches from actor threads.

It takes the agent's functions (``base.AgentFunctions``: ``init``, ``learn``
and the sharding of the agent's state) directly. One compiled step
``update(state, trajs, key) -> (state, metrics)`` takes one rollout from each
actor thread (each ``[T, B_thread, ...]``, env axis sharded over the learner
mesh), joins them along the env axis on each device, and runs
``learn`` inside ``jax.shard_map`` (gradients averaged with ``pmean``; params
replicated on every learner device).

Several processes (``jax.distributed``): the mesh is made of every process's
learner devices, process by process; rollout ``k`` of the update is the
``k``-th thread of *every* process, each process's part on its own learner
devices (``jax.make_array_from_process_local_data``), so no trajectory crosses
processes; only the gradient all-reduce does.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_dist import parallel, types
from jaxrl_dist.agents import base


class HostState(NamedTuple):
    """Learner state (replicated over the learner mesh); no seed axis, no env state."""

    params: types.Params
    opt_state: Any
    agent_state: Any
    update_step: jax.Array  # int32 scalar: updates done = version of ``params``


TRAJ_SPEC = P(None, parallel.DATA_AXIS)  # [T, B, ...]: envs split over learner devices


class HostLearner:
    """Builds ``init`` and the compiled ``update`` of an agent's functions on ``mesh``.

    Args:
      functions: the agent's ``base.AgentFunctions``, built for ``mesh.size`` devices
        and the total number of envs over all actor threads.
      mesh: the learner mesh (1-D, ``("data",)``).

    Attributes:
      traj_sharding: ``NamedSharding`` actors put trajectory leaves with.
      state_shardings: ``HostState`` of ``NamedSharding`` (what ``init`` returns).
      init: jitted ``key -> HostState`` (replicated).
      update: jitted ``(state, trajs: tuple of Transition, key) -> (state, metrics)``.

    """

    def __init__(self, functions: base.AgentFunctions, mesh):
        self.functions = functions
        self.mesh = mesh
        self.num_processes = len({d.process_index for d in mesh.devices.flat})
        self.replicated = NamedSharding(mesh, P())
        self.traj_sharding = NamedSharding(mesh, TRAJ_SPEC)
        self.state_specs = HostState(
            params=P(), opt_state=P(), agent_state=functions.agent_state_specs,
            update_step=P(),
        )
        self.state_shardings = jax.tree.map(
            lambda spec: NamedSharding(mesh, spec), self.state_specs,
            is_leaf=lambda x: isinstance(x, P),
        )
        self.init = jax.jit(self._init, out_shardings=self.state_shardings)
        # Only agent_state is donated (Ape-X's replay is updated in place): the
        # parameters stay valid for actors still copying a published version.
        self._update = jax.jit(
            parallel.shard_map(
                self._split_update, mesh,
                in_specs=(self.state_specs._replace(agent_state=P()),
                          self.state_specs.agent_state, TRAJ_SPEC, P()),
                out_specs=(self.state_specs, P()),
            ),
            donate_argnums=1,
        )

    def update(self, state: HostState, trajs: tuple, key: jax.Array):
        """One compiled learner update: ``(state, trajs, key) -> (state, metrics)``.

        ``state.agent_state`` is donated (invalid afterwards); ``state.params`` is not.
        """
        return self._update(state._replace(agent_state=()), state.agent_state, trajs, key)

    def compile_update(self, state: HostState, traj_shapes: tuple, key: jax.Array):
        """``update`` compiled ahead of time for trajectories shaped like ``traj_shapes``."""
        compiled = self._update.lower(
            state._replace(agent_state=()), state.agent_state, traj_shapes, key
        ).compile()
        return lambda s, trajs, k: compiled(s._replace(agent_state=()), s.agent_state, trajs, k)

    def _split_update(self, state: HostState, agent_state, trajs: tuple, key: jax.Array):
        return self._local_update(state._replace(agent_state=agent_state), trajs, key)

    def _init(self, key: jax.Array) -> HostState:
        params, opt_state, agent_state = self.functions.init(key)
        return HostState(params, opt_state, agent_state, jnp.zeros((), jnp.int32))

    def local_env_ids(self, num_threads: int, width: int) -> jax.Array:
        """``[num_threads * width]`` int32 global ids (``thread * B_thread + position``) of
        the envs on this learner device (inside shard_map).

        Rollout ``k`` is thread ``k`` of every process (global thread ``p * num_threads
        + k``); a device holds ``width`` envs of each, the ``l``-th slice of the thread's
        ``B_thread = width * L`` envs, ``l`` its index among its process's ``L`` learner
        devices. The ids follow the envs, not the layout, so that PPO's per-env
        minibatch shuffles are the same for any device or process count.
        """
        per_process = self.mesh.size // self.num_processes
        index = parallel.axis_index()
        process, local = index // per_process, index % per_process
        threads = process * num_threads + jnp.arange(num_threads)
        ids = (threads[:, None] * (width * per_process) + local * width
               + jnp.arange(width)[None, :])
        return ids.reshape(-1).astype(jnp.int32)

    def _local_update(self, state: HostState, trajs: tuple, key: jax.Array):
        traj = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *trajs)
        env_ids = self.local_env_ids(len(trajs), jax.tree.leaves(trajs[0])[0].shape[1])
        key = jax.random.fold_in(key, state.update_step)
        params, opt_state, agent_state, metrics = self.functions.learn(
            state.params, state.opt_state, state.agent_state, traj, key, env_ids
        )
        return HostState(params, opt_state, agent_state, state.update_step + 1), metrics
