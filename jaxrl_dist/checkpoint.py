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


def save_params(directory: str, params: Any) -> str:
    """Saves ``params`` as an orbax checkpoint in ``directory`` (created; must not exist)."""
    path = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, jax.device_get(params))
        checkpointer.wait_until_finished()
    return path


def load_params(directory: str, like: Any = None) -> Any:
    """Restores parameters saved by :func:`save_params` (as NumPy arrays)."""
    with ocp.StandardCheckpointer() as checkpointer:
        if like is None:
            return checkpointer.restore(os.path.abspath(directory))
        return checkpointer.restore(os.path.abspath(directory), jax.device_get(like))
