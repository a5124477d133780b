"""A3C with a parameter server (``--agent=a3c --ray_actors=N``).

As Mnih et al. (2016, Algorithm S3) describe it, with Ray actor processes as the
workers and the learner process as the parameter server:

* each worker (``actors/ray_actor.py``) fetches the newest parameters θ' before a
  rollout, acts ``t_max = rollout_len`` steps in its ``envs_per_thread`` envs, and
  computes dθ, the gradient of the n-step actor-critic loss at θ'
  (``agents/a3c/learner.py``), which it sends with the version of θ';
* the parameter server takes the gradients in arrival order (one queue for all
  workers), applies each with the optimizer (one update, one new version of θ,
  published at once) and logs its staleness: the server's version minus the
  worker's (``staleness/*``; the same numbers as ``policy_lag/*``).

Everything else (Ray fleet, actor faults, logging, evaluation, checkpoints) is
``host_training.HostPath``'s. A checkpoint holds the learner's state only: a resumed
run's workers start fresh episodes (new env seeds and keys), since which worker's
gradient lands when is not reproducible anyway.
"""

import queue
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxrl_dist import agents
from jaxrl_dist.run import shell
from jaxrl_dist.sebulba import actor as host_actor
from jaxrl_dist.sebulba import checkpoint as host_checkpoint
from jaxrl_dist.sebulba import ray_fleet
from jaxrl_dist.sebulba import training as host_training

LAGS = ("min", "mean", "max")


class A3CPath(host_training.HostPath):
    """The A3C acting path of ``shell.run`` (``HostPath``'s arguments).

    Raises:
      ConfigError: no ``ray_actors``, or ``deterministic`` (arrival order is not).
    """

    def __init__(self, config, settings, host: host_training.HostSettings, log,
                 make_env=None):
        agents.check_host(config.agent, host.ray_actors, host.deterministic)
        super().__init__(config, settings, host, log, make_env)
        self.title = f"A3C on {config.env} ({host.ray_actors} Ray workers)"

    def _compile(self) -> None:
        learner, agent = self.learner, self.agent

        def apply(state, grads):
            params, opt_state, metrics = agent.apply_gradients(
                state.params, state.opt_state, grads
            )
            return state._replace(params=params, opt_state=opt_state,
                                  update_step=state.update_step + 1), metrics

        grads = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=learner.replicated),
            self.state.params,
        )
        self.update = jax.jit(
            apply, out_shardings=(learner.state_shardings, learner.replicated)
        ).lower(self.state, grads).compile()

    def _actor_args(self, index: int, start) -> tuple:
        args = list(super()._actor_args(index, start))
        args[6] = None  # no snapshots: a checkpoint holds the learner alone
        return tuple(args)

    def _make_threads(self, saving: bool) -> list:
        """The workers' proxies, all handing gradients to one queue (arrival order)."""
        host = self.host
        self.saving, self.schedule = saving, None
        gradients: queue.Queue = queue.Queue(maxsize=host.num_threads * host.queue_size)
        self.queues = [gradients] * host.num_threads
        replicated = self.learner.replicated
        return [
            ray_fleet.RemoteActor(
                self.server, k, gradients, lambda tree: jax.device_put(tree, replicated),
                self.stop, self.actor_starts[k], self.settings.seed,
            )
            for k in range(host.num_threads)
        ]

    def _update(self, u: int, interval) -> None:
        """Update ``u``: the next gradient from any worker, applied; version ``u + 1``."""
        t0 = time.perf_counter()
        rollout = host_training._get_rollout(
            self.queues[0], self.stop, self.threads, 0, self.host.stall_timeout_s
        )
        t1 = time.perf_counter()
        grads, worker_metrics = rollout.traj
        self.state, metrics = self.update(self.state, grads)
        self.server.publish(u + 1, host_training._local(self.state.params))
        jax.block_until_ready(metrics)
        self.newest_updates = u + 1
        self.behaviour = self.state.params
        interval.timings["learner_queue_wait_s"] += t1 - t0
        interval.timings["update_s"] += time.perf_counter() - t1
        interval.add_rollout(rollout, u)  # lag: server version u minus the worker's
        interval.metrics.append({**worker_metrics, **metrics})

    def log_points(self, start_update: int, every: int) -> Iterator[shell.LogPoint]:
        for point in super().log_points(start_update, every):
            point.record.update(
                {f"staleness/{k}": point.record[f"policy_lag/{k}"] for k in LAGS}
            )
            yield point

    def restore(self, checkpointer, step: int) -> None:
        super().restore(checkpointer, step)
        # Fresh episodes: new env seeds (``ActorThread._seed`` takes the rollout index of
        # a start without env state) and keys.
        key = jax.random.fold_in(jax.random.key(self.settings.seed), step)
        self.actor_starts = [
            host_actor.ActorState(
                step, np.asarray(jax.random.key_data(jax.random.fold_in(key, k))), None,
                0, 0, 0,
            )
            for k in range(self.host.num_threads)
        ]

    def save(self, checkpointer, updates: int, meta: dict[str, Any]) -> None:
        host_checkpoint.save(checkpointer, updates, self.state, self.behaviour, [], meta)

    def done_text(self, summary: dict[str, Any]) -> str:
        return (f"{summary['compile_s']:.1f}s compile | gradient staleness mean "
                f"{summary['policy_lag/mean']:.2f} | env faults {summary['env_faults']} | "
                f"actor restarts {summary['actor_restarts']}")
