"""Whole-run checkpoints of host-actor (Sebulba) runs, through ``checkpoint.RunCheckpointer``.

A checkpoint after ``U`` updates holds what the run needs to go on exactly from
there:

* ``learner``: the ``HostState`` (params, optimizer state, agent state such as
  Ape-X's replay, update counter), sharded as in training;
* ``behaviour_params``: the parameters of version ``U - 1``, which rollout ``U``
  acts with in deterministic mode (``ParamServer``);
* in the JSON ``meta``: every actor thread's ``ActorState`` at the start of
  rollout ``U`` (PRNG key, envs' state, counters), of every process, in global
  thread order (base64 of a pickle: the envs' state is Python objects), and the
  run's counters (policy-lag statistics, wall time).

Several processes: each thread's state lives in its own process; they are
gathered onto every process (``process_allgather``) so that the checkpoint is
one orbax save like any other, and each process picks its own threads on
restore. The pickle is trusted: it comes from the run's own workdir.
"""

import base64
import pickle
from typing import Any

import jax
import numpy as np

from jaxrl_dist.run import checkpoint
from jaxrl_dist.sebulba import actor as host_actor


def _gather_bytes(blob: bytes) -> list[bytes]:
    """Every process's ``blob``, in process order (a collective)."""
    if jax.process_count() == 1:
        return [blob]
    from jax.experimental import multihost_utils

    lengths = np.asarray(multihost_utils.process_allgather(np.array([len(blob)], np.int64)))
    lengths = lengths.reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(blob)] = np.frombuffer(blob, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(row[:n]) for row, n in zip(rows, lengths, strict=True)]


def encode_actor_states(local: list[host_actor.ActorState]) -> list[str]:
    """This process's threads' states -> every process's, in global thread order, as
    base64 strings (a collective in a multi-process run)."""
    blobs = _gather_bytes(pickle.dumps([s._asdict() for s in local]))
    return [
        base64.b64encode(pickle.dumps(state)).decode("ascii")
        for blob in blobs for state in pickle.loads(blob)  # noqa: S301 - our own bytes
    ]


def decode_actor_states(encoded: list[str]) -> list[host_actor.ActorState]:
    """Inverse of :func:`encode_actor_states` (all threads of every process)."""
    return [
        host_actor.ActorState(**pickle.loads(base64.b64decode(s)))  # noqa: S301
        for s in encoded
    ]


def save(checkpointer: checkpoint.RunCheckpointer, updates: int, state: Any,
         behaviour_params: Any, actor_states: list[host_actor.ActorState],
         meta: dict[str, Any]) -> None:
    """Saves a host-run checkpoint after ``updates`` updates (every process calls it).

    Args:
      state: the learner's ``HostState`` (global arrays).
      behaviour_params: parameters of version ``updates - 1`` (global arrays).
      actor_states: this process's threads' ``ActorState`` at rollout ``updates``.
      meta: JSON-able run facts; ``actors`` is added.
    """
    meta = dict(meta, actors=encode_actor_states(actor_states))
    checkpointer.save(updates, {"learner": state, "behaviour_params": behaviour_params}, meta)


def restore(checkpointer: checkpoint.RunCheckpointer, updates: int, abstract_state: Any,
            abstract_params: Any) -> tuple[Any, Any, list[host_actor.ActorState], dict]:
    """``(state, behaviour_params, actor_states of every thread, meta)`` of checkpoint
    ``updates``.

    Raises:
      ValueError: the checkpoint's arrays do not fit the abstract ones (another config).
    """
    restored, meta = checkpointer.restore(
        updates, {"learner": abstract_state, "behaviour_params": abstract_params}
    )
    actors = decode_actor_states(meta.pop("actors"))
    return restored["learner"], restored["behaviour_params"], actors, meta
