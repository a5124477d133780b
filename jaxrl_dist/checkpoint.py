"""Checkpoints through orbax, and a stable hash of parameters."""

import hashlib
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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
    multi-process run, whose peers may never reach a save).
    """
    path = os.path.abspath(directory)
    options = {}
    if this_process_only:
        me = jax.process_index()
        options["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}
        )
    with ocp.StandardCheckpointer(**options) as checkpointer:
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


def _data_to_keys(abstract: Any, tree: Any) -> Any:
    return jax.tree.map(
        lambda a, x: jax.random.wrap_key_data(x, impl=jax.random.key_impl(a)) if _is_key(a)
        else x,
        abstract, tree,
    )


class RunCheckpointer:
    """Whole-run checkpoints (train state + a JSON ``meta`` dict) in ``directory/<step>/``.

    Built on ``orbax.checkpoint.CheckpointManager``: a save is written into a
    temporary directory and renamed when complete, so a process killed during a
    save leaves the previous checkpoint as the latest (the partial one is never
    listed, and orbax removes it on the next start). Saves are synchronous. In
    a multi-process run every process must call ``save``/``restore`` (each
    writes and reads the shards it holds); the directory must be shared.

    Args:
      directory: where checkpoints live (created).
      max_to_keep: finished checkpoints kept (older ones are deleted).
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step (updates done), or ``None``."""
        self._manager.reload()
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves ``state`` (a pytree of ``jax.Array``) and ``meta`` at ``step``; blocks."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_keys_to_data(state)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON ``meta`` of checkpoint ``step`` alone (no arrays are read)."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"])

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """``(state, meta)`` of checkpoint ``step``.

        Args:
          abstract_state: the state's structure as ``jax.ShapeDtypeStruct`` leaves
            with shardings (``jax.eval_shape`` of the init function, shardings
            added); arrays are restored onto those shardings.

        Raises:
          ValueError: the checkpoint's structure or shapes differ from
            ``abstract_state`` (a different config).
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract_data(abstract_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return _data_to_keys(abstract_state, restored["state"]), dict(restored["meta"])

    def close(self) -> None:
        self._manager.close()
