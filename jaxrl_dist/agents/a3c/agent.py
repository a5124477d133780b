"""A3C's two halves: the worker's gradient and the parameter server's step.

A worker (``sebulba/ray_actor.py``) runs ``actor_batch`` on each finished rollout, with
the parameters it acted with: the gradient of A2C's n-step actor-critic loss
(``a2c.agent.Agent._loss``; ``gae_lambda = 1`` gives A3C's n-step returns) and the
loss metrics. The parameter server (``sebulba/a3c.py``) applies each gradient as it
arrives with ``apply_gradients`` (Algorithm S3: "perform asynchronous update of θ
using dθ"). Nothing here runs on on-device envs: A3C's asynchrony needs workers.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from jaxrl_dist import parallel, types
from jaxrl_dist.agents import base
from jaxrl_dist.agents.a2c import agent as a2c_agent


class Agent(a2c_agent.Agent):
    """A3C (Mnih et al. 2016, Algorithm S3): A2C's loss, gradients computed by workers.

    Args: as ``base.Agent``; ``config.num_envs`` is one worker's envs.
    """

    def actor_batch(self, params, traj: types.Transition, env_ids: jax.Array):
        """``(grads, metrics)`` of the n-step loss on one worker's rollout.

        Args:
          params: the parameters the rollout acted with (the worker's copy).
          traj: ``Transition`` ``[T, B, ...]`` of the worker's ``B`` envs.
          env_ids: ``[B]`` int32 (unused).

        Returns:
          ``grads`` shaped like ``params`` (float32) and scalar float32 metrics: the
          losses of ``a2c``'s ``_loss`` and the ``observations``, ``rewards``,
          ``loss`` and ``gradients`` non-finite flags (``base.NONFINITE_FLAGS``).
        """
        del env_ids
        mesh = parallel.make_mesh(1)  # the worker's own device
        return parallel.shard_map(
            self._worker_gradients, mesh, in_specs=(P(), P()), out_specs=(P(), P())
        )(params, traj)

    def _worker_gradients(self, params, traj: types.Transition):
        grads, metrics = parallel.mean_grad(self._loss, params, traj)
        metrics.update(base.nonfinite_flags(
            observations=base.all_finite(traj.obs, traj.next_obs),
            rewards=base.all_finite(traj.reward),
            loss=jnp.isfinite(metrics["loss/total"]), gradients=base.all_finite(grads),
        ))
        return grads, parallel.pmean(metrics)

    def apply_gradients(self, params, opt_state, grads):
        """The parameter server's step: ``(params, opt_state, metrics)`` after applying
        one worker's ``grads`` with the optimizer (``metrics``: ``opt/grad_norm`` and the
        ``parameters`` non-finite flag)."""
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"opt/grad_norm": optax.tree.norm(grads),
                   **base.nonfinite_flags(parameters=base.all_finite(params))}
        return params, opt_state, metrics


