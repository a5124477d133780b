"""Device meshes and data parallelism: the only module that knows about meshes.

Data parallelism over one mesh axis, ``"data"``: environments (and therefore
trajectories) are split across devices, parameters and optimizer state are
replicated, and gradients are averaged with ``lax.pmean`` inside
``jax.shard_map``.
"""

import jax
import jax.numpy as jnp
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


def process_mesh(local_device_ids) -> Mesh:
    """A 1-D mesh ``("data",)`` over the devices with these *local* indices (ints into
    each process's devices sorted by id) in every process, process 0's first; in one
    process simply those devices of ``jax.devices()``.

    Raises:
      IndexError: an index is not below a process's local device count (callers
        validate the flags first: ``HostSettings.resolve``).
    """
    devices = []
    for process in range(jax.process_count()):
        local = sorted(
            (d for d in jax.devices() if d.process_index == process), key=lambda d: d.id
        )
        devices += [local[i] for i in local_device_ids]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_map(fn, mesh: Mesh, in_specs, out_specs):
    """``jax.shard_map`` over ``mesh``."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def axis_index() -> jax.Array:
    """Index of this device along the data axis (inside ``shard_map``)."""
    return jax.lax.axis_index(DATA_AXIS)


def _packed(collective, tree):
    """``collective`` on all leaves of ``tree`` as ONE flat array per dtype.

    One all-reduce instead of one per leaf: across processes (gloo, NCCL over
    the network) every collective pays a fixed latency, and XLA does not
    always combine them. Elementwise, so results equal the per-leaf ones.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if len(leaves) <= 1:
        return jax.tree.unflatten(treedef, [collective(x) for x in leaves])
    groups: dict = {}
    for i, x in enumerate(leaves):
        groups.setdefault(jnp.result_type(x), []).append(i)
    out = list(leaves)
    for indices in groups.values():
        flat = collective(jnp.concatenate([jnp.ravel(leaves[i]) for i in indices]))
        offset = 0
        for i in indices:
            size = int(np.prod(jnp.shape(leaves[i])))
            out[i] = flat[offset:offset + size].reshape(jnp.shape(leaves[i]))
            offset += size
    return jax.tree.unflatten(treedef, out)


def mean_grad(loss_fn, params, *args):
    """``(∇θ mean-over-devices loss, aux)`` of ``loss_fn(params, *args) -> (loss, aux)``.

    Inside ``shard_map``, with ``params`` replicated (device-invariant) and
    ``loss_fn`` the mean over this device's data: the gradient of the global
    mean loss, i.e. the device mean of the local gradients (one all-reduce per
    dtype). ``jax.grad`` taken directly at invariant params would already
    *sum* the local gradients (the transpose of the implicit invariant→varying
    cast is a ``psum``: one all-reduce per leaf), so that a following ``pmean``
    returns ``n`` times the mean gradient. Differentiating at a device-varying
    copy (``lax.pcast(..., to="varying")``) gives the local gradient instead.

    Args:
      loss_fn: ``(params, *args) -> (scalar float32 loss, aux)``.
      params: pytree of replicated float arrays.
      *args: the rest of ``loss_fn``'s arguments (this device's data).

    Returns:
      ``(grads, aux)``: ``grads`` shaped and typed like ``params``, identical on every
      device; ``aux`` this device's (not averaged).

    Raises:
      NameError: called outside ``shard_map`` over ``DATA_AXIS`` (unbound axis name).
    """
    local = jax.lax.pcast(params, DATA_AXIS, to="varying")
    grads, aux = jax.grad(loss_fn, has_aux=True)(local, *args)
    return pmean(grads), aux


def pmean(tree):
    """Mean over the data axis (inside ``shard_map``), one all-reduce per dtype."""
    return _packed(lambda x: jax.lax.pmean(x, DATA_AXIS), tree)


def psum(tree):
    """Sum over the data axis (inside ``shard_map``), one all-reduce per dtype."""
    return _packed(lambda x: jax.lax.psum(x, DATA_AXIS), tree)
