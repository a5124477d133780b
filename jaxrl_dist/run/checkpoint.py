"""Checkpoints through orbax, verified by digests, and a stable hash of parameters."""

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxrl_dist.run import sigterm


def params_sha256(params: Any) -> str:
    """SHA-256 hex digest of the parameters' bytes, leaves in ``jax.tree`` order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def save_params(directory: str, params: Any, this_process_only: bool = False) -> str:
    """Saves ``params`` as an orbax checkpoint in ``directory`` (replacing one there).

    ``params`` may be NumPy or (in a multi-process run, where every process must
    call this) global ``jax.Array`` leaves. ``this_process_only``: NumPy ``params``
    saved by the calling process alone, with no barrier with the others (a failing
    multi-process run, whose peers may never reach a save). A SIGTERM or Ctrl-C during
    the write is raised when it is done (``sigterm.deferred``).
    """
    path = os.path.abspath(directory)
    options = {}
    if this_process_only:
        me = jax.process_index()
        options["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}
        )
    with sigterm.deferred(), ocp.StandardCheckpointer(**options) as checkpointer:
        checkpointer.save(path, params, force=True)
        checkpointer.wait_until_finished()
    return path


def load_params(directory: str, like: Any = None) -> Any:
    """Restores parameters saved by :func:`save_params` as NumPy arrays.

    Works whatever devices or processes saved them (the shapes come from the
    checkpoint's metadata unless ``like`` gives them).
    """
    path = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        if like is None:
            meta = checkpointer.metadata(path)
            like = jax.tree.map(
                lambda x: np.zeros(x.shape, x.dtype), getattr(meta, "item_metadata", meta)
            )
        return checkpointer.restore(path, jax.device_get(like))


# ------------------------------------------------------------------ whole runs
def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    """Typed PRNG key leaves as their raw ``uint32`` data (what orbax can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_data(abstract: Any) -> Any:
    def leaf(x):
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, x)
            sharding = getattr(x, "sharding", None)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        return x

    return jax.tree.map(leaf, abstract)


def _key_impl(a: Any) -> Any:
    if isinstance(a, jax.Array):
        return jax.random.key_impl(a)
    return a.dtype._impl  # a ShapeDtypeStruct of a key dtype: jax's KeyTy holds the impl


def _data_to_keys(abstract: Any, tree: Any) -> Any:
    return jax.tree.map(
        lambda a, x: jax.random.wrap_key_data(x, impl=_key_impl(a)) if _is_key(a) else x,
        abstract, tree,
    )


# Entries ``RunCheckpointer.save`` adds to a checkpoint's meta.
STATE_DIGEST = "state_sha256"  # [one hex digest per process]
META_DIGEST = "meta_sha256"  # hex digest of the rest of the meta


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be read back, or whose contents fail their digest."""


def state_sha256(state: Any) -> str:
    """SHA-256 hex digest of the array bytes this process holds of ``state``.

    Leaves in ``jax.tree`` order; a leaf this process holds whole (every NumPy
    array, every fully addressable ``jax.Array``) contributes its bytes, so the
    digest does not depend on how the array is sharded; a leaf spread over
    processes contributes the shards this process holds as replica 0, each with
    its index. Typed PRNG keys count as their ``uint32`` data.
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(_keys_to_data(state)):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
            continue
        shards = [s for s in leaf.addressable_shards if s.replica_id == 0]
        for shard in sorted(shards, key=lambda s: str(s.index)):
            digest.update(str(shard.index).encode())
            digest.update(np.ascontiguousarray(np.asarray(shard.data)).tobytes())
    return digest.hexdigest()


def _meta_sha256(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k not in (STATE_DIGEST, META_DIGEST)}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _all_processes(values: list[bytes]) -> list[bytes]:
    """Every process's 32-byte value, in process order (this process's alone when one)."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    local = np.frombuffer(values[0], np.uint8)
    gathered = multihost_utils.process_allgather(local)
    return [bytes(row) for row in np.asarray(gathered).reshape(jax.process_count(), -1)]


def _agree(error: str | None) -> None:
    """Raises ``DamagedCheckpoint`` on every process when any process had ``error``."""
    flags_all = _all_processes([bytes([error is not None]) * 32])
    bad = [i for i, f in enumerate(flags_all) if any(f)]
    if error:
        raise DamagedCheckpoint(error)
    if bad:
        raise DamagedCheckpoint(f"process {bad[0]} could not verify its part")


def _shapes(tree: Any) -> list[str]:
    return sorted(f"{tuple(x.shape)}:{np.dtype(x.dtype).name}" for x in jax.tree.leaves(tree))


class RunCheckpointer:
    """Whole-run checkpoints (train state + a JSON ``meta`` dict) in ``directory/<step>/``.

    Built on ``orbax.checkpoint.CheckpointManager``: a save is written into a
    temporary directory and renamed when complete, so a process killed during a
    save leaves the previous checkpoint as the latest (the partial one is never
    listed, and orbax removes it on the next start). Saves are synchronous. In
    a multi-process run every process must call ``save``/``restore`` (each
    writes and reads the shards it holds); the directory must be shared.

    Each save records digests in the meta: ``state_sha256`` (``state_sha256`` of
    the state, one per process) and ``meta_sha256`` (of the rest of the meta);
    ``meta`` and ``restore`` verify them and raise ``DamagedCheckpoint`` when a
    checkpoint cannot be read or fails them. Checkpoints written before digests
    existed are read unverified.

    A SIGTERM or Ctrl-C during a save is raised when the save is done
    (``sigterm.deferred``): an orbax save cut short by an exception leaves its writer
    threads and temporary directory behind, and the next save fails on them.
    ``last_good_step`` is the step of the newest checkpoint this object restored or
    saved in full (``None`` before either), set together with the save's end, so that
    an interrupt raised right after a save still finds it counted.

    Args:
      directory: where checkpoints live (created).
      max_to_keep: finished checkpoints kept (older ones are deleted).
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )
        self.last_good_step: int | None = None

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step (updates done), or ``None``."""
        self._manager.reload()
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every finished checkpoint's step, newest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps(), reverse=True)

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves ``state`` (a pytree of ``jax.Array``) and ``meta`` at ``step`` with their
        digests; blocks. Every process calls it (the digests are gathered). A SIGTERM or
        Ctrl-C during the write raises ``KeyboardInterrupt`` once it is done."""
        local = bytes.fromhex(state_sha256(state))
        meta = dict(meta, **{STATE_DIGEST: [d.hex() for d in _all_processes([local])]})
        meta[META_DIGEST] = _meta_sha256(meta)
        with sigterm.deferred():
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_keys_to_data(state)),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self._manager.wait_until_finished()
            self.last_good_step = step

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON ``meta`` of checkpoint ``step`` alone (no arrays are read), verified.

        Raises:
          DamagedCheckpoint: it cannot be read, or fails its ``meta_sha256``.
        """
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            meta = dict(restored["meta"])
        except Exception as e:  # orbax raises many kinds for a damaged directory
            raise DamagedCheckpoint(f"meta unreadable ({_one_line(e)})") from None
        if META_DIGEST in meta and meta[META_DIGEST] != _meta_sha256(meta):
            raise DamagedCheckpoint("meta fails its digest")
        return meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """``(state, meta)`` of checkpoint ``step``, verified against its digests.

        Args:
          abstract_state: the state's structure as ``jax.ShapeDtypeStruct`` leaves
            with shardings (``jax.eval_shape`` of the init function, shardings
            added); arrays are restored onto those shardings.

        Raises:
          ValueError: the checkpoint's array shapes differ from ``abstract_state``
            (a different config).
          DamagedCheckpoint: the checkpoint cannot be read back or fails its digests
            (on every process when any process fails).
        """
        meta = self.meta(step)
        abstract = _abstract_data(abstract_state)
        try:
            stored = self._manager.item_metadata(step)["state"]
            stored = getattr(stored, "tree", stored)
        except Exception as e:
            raise DamagedCheckpoint(f"array metadata unreadable ({_one_line(e)})") from None
        if _shapes(stored) != _shapes(abstract):
            raise ValueError(f"its arrays {_shapes(stored)[:3]}... differ from this run's "
                             f"{_shapes(abstract)[:3]}...")
        error, state = None, None
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
            state = _data_to_keys(abstract_state, restored["state"])
            digests = meta.get(STATE_DIGEST)
            if digests is not None and state_sha256(state) != digests[jax.process_index()]:
                error = "arrays fail their digest"
        except Exception as e:
            error = f"arrays unreadable ({_one_line(e)})"
        _agree(error)
        self.last_good_step = step
        return state, meta

    def set_aside(self, steps: list[int]) -> str:
        """Moves checkpoints ``steps`` (damaged ones) out of the directory, into
        ``<directory>.damaged/<step>`` (process 0; the others wait), so that the run can
        save those steps again; returns that folder."""
        aside = self.directory + ".damaged"
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                source = os.path.join(self.directory, str(step))
                target = os.path.join(aside, str(step))
                if os.path.exists(target):
                    import shutil

                    shutil.rmtree(target)
                if os.path.exists(source):
                    os.replace(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("damaged checkpoints set aside")
        self._manager.reload()
        return aside

    def close(self) -> None:
        self._manager.close()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}"
