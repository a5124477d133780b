"""One actor process of a Ray fleet: an ``ActorThread`` in a process of its own.

``ActorProcess`` is the class Ray runs as an actor (``ray_fleet`` wraps it with
``ray.remote``). It builds the agent's acting functions on its own CPU device
(one XLA thread: the process's environment sets ``PJRT_NPROC=1``) and runs
exactly the ``host_actor.ActorThread`` an actor thread of the learner's process
would run with the same index: the same seeds, PRNG keys, env ids, parameter
versions (``--deterministic``, ``--param_refresh_steps``), fault handling and
snapshots, so a fleet of ``N`` processes computes what ``N`` threads compute. Only
where the rollouts go differs: into a bounded local queue (at most
``queue_size`` ready rollouts: backpressure), from which the learner's proxy
(``ray_fleet.RemoteActor``) takes them as numpy arrays through the object store.

Parameters arrive by ``publish`` (once per version, from the object store); the
agent's ``actor_batch`` (Ape-X's n-step transitions and priorities, A3C's
gradients) runs here, on the rollout, with the parameters it acted with.
"""

import os
import queue
import threading
from typing import Any

import jax
import numpy as np

from jaxrl_dist import agents, tuning
from jaxrl_dist.sebulba import actor as host_actor
from jaxrl_dist.sebulba import param_server as param_server_lib

# The process environment of every actor process (Ray's ``runtime_env``): CPU only, one
# device, one XLA intra-op thread (several actor processes share a host's cores).
PROCESS_ENV = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PJRT_NPROC": "1"}
JOIN_S = 2.0


class ActorProcess:
    """The Ray actor: hosts one ``ActorThread``; see the module docstring.

    Args:
      index: the actor's global index ``k`` (as actor thread ``k``: seeds, env ids, keys).
      config: the run's agent config (``host_training.host_config``'s).
      spec: the env's ``envs.spec.EnvSpec``.
      num_learner_devices: the learner mesh's size (the config is validated for it).
      settings: ``host_actor.ActorSettings``.
      queue_size: finished rollouts this process may hold (then it waits).
      snapshot_at: picklable ``rollout_index -> bool`` (checkpoint points), or ``None``.
      start: an ``ActorState`` to resume from (``None``: rollout 0, fresh envs).
      make_env: picklable ``(ActorSettings, seed) -> VectorEnv``-like factory, or ``None``.
    """

    def __init__(self, index: int, config, spec, num_learner_devices: int,
                 settings: host_actor.ActorSettings, queue_size: int,
                 snapshot_at=None, start: host_actor.ActorState | None = None,
                 make_env=None):
        agent = agents.make_agent(config, spec, num_learner_devices,
                                  tuning.for_platform(jax.default_backend()))
        fns = agent.functions()
        finish_fn = jax.jit(fns.actor_step) if fns.actor_step else None
        _warm_up(agent, fns.act, finish_fn, spec, settings)
        self.server = param_server_lib.ParamServer(keep=2)
        self.rollouts: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.thread = host_actor.ActorThread(
            index, settings, jax.devices()[0], fns.act, self.server, self.rollouts,
            _to_numpy, self.stop, make_env, finish_fn, snapshot_at, start,
        )
        self.thread.start()

    def publish(self, version: int, params: Any) -> None:
        """Makes ``params`` (numpy pytree) version ``version``; calls may arrive out of
        order (``ParamServer.add``)."""
        self.server.add(version, params)

    def next_rollout(self, timeout: float):
        """The next finished ``Rollout`` (numpy ``traj``); ``None`` if none within
        ``timeout`` s; ``("error", message)`` once the thread failed."""
        try:
            return self.rollouts.get(timeout=timeout)
        except queue.Empty:
            pass
        if self.thread.error is not None:
            return ("error", repr(self.thread.error))
        if not self.thread.is_alive():
            return ("error", "the actor thread stopped")
        return None

    def snapshot(self, rollout_index: int, timeout: float) -> host_actor.ActorState | None:
        """``ActorThread.snapshot``: the state at the start of rollout ``rollout_index``."""
        return self.thread.snapshot(rollout_index, timeout)

    def ready(self) -> bool:
        """``True`` once the process is up and its programs are compiled (a call waits
        for the constructor)."""
        return True

    def pid(self) -> int:
        """This process's id (tests kill it)."""
        return os.getpid()

    def close(self) -> None:
        """Stops the thread (within ``host_actor.WAIT_S``) and closes its envs."""
        self.stop.set()
        self.server.close()
        self.thread.join(JOIN_S)


def _warm_up(agent, act_fn, finish_fn, spec, settings: host_actor.ActorSettings) -> None:
    """Compiles ``act_fn`` (and ``finish_fn``) for this actor's shapes on zeros, before
    the first rollout (as ``HostPath`` does for actor threads)."""
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                          jax.eval_shape(agent.init_params, jax.random.key(0)))
    envs = settings.envs_per_thread
    obs = np.zeros((envs, *spec.obs_shape), getattr(spec, "obs_dtype", np.float32))
    env_ids = np.arange(envs, dtype=np.int32)
    jax.block_until_ready(act_fn(params, obs, jax.random.key(0), env_ids))
    if finish_fn is not None:
        shapes = host_actor.transition_shapes(spec, act_fn, params, settings.rollout_len, envs)
        zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
        jax.block_until_ready(finish_fn(params, zeros, env_ids))


def _to_numpy(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


def random_action_steps(env: str, envs: int, vectorization: str, duration_s: float,
                        seed: int, start_at: float) -> int:
    """Env steps one actor process takes in ``duration_s`` s of uniformly random actions
    in a ``VectorEnv`` of ``envs`` envs (no inference, no learning), starting at wall
    time ``start_at`` (so that every process of a fleet steps at once). Run as a Ray task
    by ``ray_fleet.random_action_sps``."""
    import time

    from jaxrl_dist.envs import gymnasium_env

    spec = gymnasium_env.make_spec(env)
    vec = gymnasium_env.make_vector(env, envs, seed, vectorization)
    rng = np.random.default_rng(seed)
    if spec.discrete:
        actions = [rng.integers(0, spec.action_dim, envs) for _ in range(64)]
    else:
        low, high = spec.action_space.low, spec.action_space.high
        actions = [rng.uniform(low, high, (envs, spec.action_dim)).astype(np.float32)
                   for _ in range(64)]
    try:
        time.sleep(max(0.0, start_at - time.time()))
        deadline, steps = time.perf_counter() + duration_s, 0
        while time.perf_counter() < deadline:
            vec.step(actions[steps % 64])
            steps += 1
        return steps * envs
    finally:
        vec.close()
