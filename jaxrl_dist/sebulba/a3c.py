"""A3C's learner step: a parameter server (``--agent=a3c --ray_actors=N``).

As Mnih et al. (2016, Algorithm S3) describe it, with Ray actor processes as the
workers and the learner process as the parameter server:

* each worker (``sebulba/ray_actor.py``, running ``sebulba/actor.py``'s thread) fetches
  the newest parameters θ' before a rollout, acts ``t_max = rollout_len`` steps in its
  ``envs_per_thread`` envs, and computes dθ, the gradient of the n-step actor-critic
  loss at θ' (``Agent.actor_batch`` in ``agents/a3c/agent.py``), which it sends with
  the version of θ';
* the parameter server takes the gradients in arrival order (one queue for all
  workers), applies each with the optimizer (``Agent.apply_gradients``: one update,
  one new version of θ, published at once) and logs its staleness: the server's
  version minus the worker's (``staleness/*``; the same numbers as ``policy_lag/*``).

``GradientStep`` is that server as a ``LearnerStep`` of ``training.HostPath``, which
does everything else (Ray fleet, actor faults, logging, evaluation, checkpoints;
``training.step_for`` picks this step for A3C). ``snapshots`` is off: a
checkpoint holds the learner's state only, and a resumed run's workers start fresh
episodes (new env seeds and keys), since which worker's gradient lands when is not
reproducible anyway.

This module imports no other part of the host path (``training`` imports it).
"""

import queue
from collections.abc import Callable
from typing import Any

import jax

from jaxrl_dist import agents

LAGS = ("min", "mean", "max")


class GradientStep:
    """A3C's ``training.LearnerStep``: each update applies the next gradient from any
    worker (one shared queue, arrival order) with ``apply_gradients``; no actor
    snapshots.

    Args:
      config: the agent's config (``config.agent`` names the rule to check).
      host: the run's ``training.HostSettings``.

    Raises:
      ConfigError: no ``ray_actors``, or ``deterministic`` (arrival order is not):
        ``agents.check_host``.
    """

    snapshots = False  # a checkpoint holds the learner alone

    def __init__(self, config, host):
        agents.check_host(config.agent, host.ray_actors, host.deterministic)

    def title(self, config, host) -> str:
        return f"A3C on {config.env} ({host.ray_actors} Ray workers)"

    def queues(self, host) -> list[queue.Queue]:
        """One queue of ``num_threads * queue_size`` gradients, every worker's entry."""
        gradients: queue.Queue = queue.Queue(maxsize=host.num_threads * host.queue_size)
        return [gradients] * host.num_threads

    def rollouts_per_update(self, host) -> int:
        del host
        return 1  # the next gradient, whichever worker sent it

    def to_learner(self, parts) -> Callable[[Any], Any]:
        """``(grads, metrics) -> the same, replicated on the learner mesh``."""
        replicated = parts.learner.replicated
        return lambda tree: jax.device_put(tree, replicated)

    def compile(self, parts, state, sent_shapes) -> None:
        """Compiles ``apply(state, grads) -> (state, metrics)``: ``grads`` shaped like
        ``state.params`` (replicated), one optimizer step, ``update_step + 1``."""
        del sent_shapes  # a gradient is shaped like the parameters
        learner, agent = parts.learner, parts.agent

        def apply(state, grads):
            params, opt_state, metrics = agent.apply_gradients(
                state.params, state.opt_state, grads
            )
            return state._replace(params=params, opt_state=opt_state,
                                  update_step=state.update_step + 1), metrics

        grads = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=learner.replicated),
            state.params,
        )
        self.apply = jax.jit(
            apply, out_shardings=(learner.state_shardings, learner.replicated)
        ).lower(state, grads).compile()

    def learn(self, state, rollouts: list) -> tuple[Any, dict[str, Any]]:
        """``(state, metrics)`` after applying the one rollout's gradient; ``metrics``:
        the worker's loss metrics, then ``apply_gradients``'s."""
        (rollout,) = rollouts
        grads, worker_metrics = rollout.traj
        state, metrics = self.apply(state, grads)
        return state, {**worker_metrics, **metrics}

    def extend_record(self, record: dict[str, Any]) -> None:
        """``staleness/{min,mean,max}``: the log point's ``policy_lag/*`` (server version
        minus the worker's, per applied gradient)."""
        record.update({f"staleness/{k}": record[f"policy_lag/{k}"] for k in LAGS})

    def done_text(self, summary: dict[str, Any]) -> str:
        return (f"{summary['compile_s']:.1f}s compile | gradient staleness mean "
                f"{summary['policy_lag/mean']:.2f} | env faults {summary['env_faults']} | "
                f"actor restarts {summary['actor_restarts']}")
