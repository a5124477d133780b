"""Device meshes and data parallelism: the only module that knows about meshes.

Data parallelism over one mesh axis, ``"data"``: environments (and therefore
trajectories) are split across devices, parameters and optimizer state are
replicated, and gradients are averaged with ``lax.pmean`` inside
``jax.shard_map``.
"""

import jax
import numpy as np
from jax.sharding import Mesh

from jaxrl_dist import errors

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh ``("data",)`` over the first ``num_devices`` devices (default: all).

    Raises:
      ConfigError: ``num_devices`` is not in ``1..jax.device_count()``.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise errors.ConfigError(
            f"--num_devices must be in 1..{len(devices)} (devices available), got {num_devices}"
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def check_seeds_on_cpu_mesh(mesh: Mesh, num_seeds: int) -> None:
    """Rejects a configuration that deadlocks XLA's CPU runtime (seen with jax 0.10.2).

    On the CPU backend, a program with collectives, vmapped over more than one
    seed, on a mesh that spans *every* CPU device never returns from
    ``Execute``; with at least one CPU device left out of the mesh it runs.

    Raises:
      ConfigError: ``num_seeds > 1`` on a CPU mesh over all (> 1) CPU devices.
    """
    devices = jax.devices()
    if (
        num_seeds > 1
        and 1 < mesh.size == len(devices)
        and devices[0].platform == "cpu"
    ):
        raise errors.ConfigError(
            f"--num_seeds={num_seeds} with a mesh over all {mesh.size} CPU devices deadlocks "
            "in XLA's CPU runtime; use --num_devices < "
            f"{mesh.size}, --num_seeds=1, or force more host devices"
        )


def shard_map(fn, mesh: Mesh, in_specs, out_specs):
    """``jax.shard_map`` over ``mesh``."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def axis_index() -> jax.Array:
    """Index of this device along the data axis (inside ``shard_map``)."""
    return jax.lax.axis_index(DATA_AXIS)


def pmean(tree):
    """Mean over the data axis (inside ``shard_map``)."""
    return jax.lax.pmean(tree, DATA_AXIS)


def psum(tree):
    """Sum over the data axis (inside ``shard_map``)."""
    return jax.lax.psum(tree, DATA_AXIS)
