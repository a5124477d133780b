"""The device memory a run needs, estimated before anything is compiled or allocated.

A run's memory is mostly its state (parameters, optimizer state, environment
states, IMPALA's lagged parameter copies, Ape-X's replay), whose exact size per
device comes from ``jax.eval_shape`` of the init function and the state's
shardings, plus the rollout and the update's intermediate buffers, which scale
with ``num_envs x rollout_len`` and the observation size. ``check`` refuses a
config whose estimate exceeds what the device has free, naming the flag behind
the largest part.
"""

import math
import os
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrl_dist import errors

# Bytes of rollout and update buffers per env step of a rollout, per observation byte
# (the rollout's float32 observations, their copies in the update: the minibatch
# gather, the network's activations and gradients) and fixed (actions, rewards,
# discounts, log-probs, values, advantages, returns: float32 each, with copies).
# Calibrated from XLA's memory analysis of compiled updates (docs/benchmarks/memory.md).
BYTES_PER_OBS_BYTE = 6
BYTES_PER_STEP = 1536

# Of the free memory, the part an estimate may take: XLA keeps workspace of its own,
# and the estimate is approximate.
USABLE_FRACTION = 0.9


class Part(NamedTuple):
    """One part of a run's memory: what it is, the flag that sizes it, bytes per device."""

    what: str
    flag: str
    nbytes: int


def per_device_bytes(abstract: Any) -> int:
    """Bytes one device holds of ``abstract`` (``ShapeDtypeStruct`` leaves with
    shardings; a leaf without one counts whole)."""
    total = 0
    for leaf in jax.tree.leaves(abstract):
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def rollout_part(obs_shape: tuple[int, ...], obs_dtype: Any, env_steps_per_device: int,
                 flag: str = "--num_envs") -> Part:
    """The rollout and update buffers of ``env_steps_per_device`` env steps (a rollout's
    ``rollout_len x num_envs x num_seeds`` on one device)."""
    obs_bytes = math.prod(obs_shape) * max(np.dtype(obs_dtype).itemsize, 4)
    per_step = BYTES_PER_OBS_BYTE * obs_bytes + BYTES_PER_STEP
    return Part("rollout and update buffers", flag, env_steps_per_device * per_step)


def free_bytes(device: jax.Device) -> tuple[int, str]:
    """``(bytes free, description)`` of ``device``'s memory: the accelerator's own
    (``memory_stats``: limit minus in use) or, for CPU devices, the host's available
    memory shared by this process's CPU devices."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"{device.platform}:{device.id} ({device.device_kind})"
    available = _host_available_bytes()
    shared = max(1, len([d for d in jax.local_devices() if d.platform == device.platform]))
    where = "host memory" + (f" shared by {shared} CPU devices" if shared > 1 else "")
    return available // shared, where


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.1f} MiB"


def check(parts: list[Part], device: jax.Device, values: dict[str, Any]) -> int:
    """Raises ConfigError (one line naming ``--num_seeds`` if one seed's share would fit,
    else the flag behind the largest part) when ``parts`` need more than
    ``USABLE_FRACTION`` of ``device``'s free memory; returns the bytes needed per device.
    Every part of an on-device run grows with its seeds: one seed needs
    ``1 / num_seeds`` of the total.

    Args:
      parts: the run's memory per device.
      device: one of the run's devices (all alike).
      values: flag name (``"--policy_lag"``) -> its value, for the message;
        ``"--num_seeds"``: the run's vmapped seeds (absent or 1: one).
    """
    needed = sum(p.nbytes for p in parts)
    free, where = free_bytes(device)
    if needed <= USABLE_FRACTION * free:
        return needed
    detail = ", ".join(f"{p.what} {gb(p.nbytes)}"
                       for p in sorted(parts, key=lambda p: -p.nbytes) if p.nbytes)
    seeds = values.get("--num_seeds") or 1
    if seeds > 1 and needed / seeds <= USABLE_FRACTION * free:  # one seed would fit
        raise errors.ConfigError(
            f"--num_seeds={seeds} needs about {gb(needed)} per device ({detail}; one seed "
            f"{gb(needed / seeds)}), more than the {gb(free)} free in {where}; lower "
            "--num_seeds"
        )
    largest = max(parts, key=lambda p: p.nbytes)
    value = values.get(largest.flag)
    setting = f"{largest.flag}={value}" if value is not None else largest.flag
    raise errors.ConfigError(
        f"{setting} needs about {gb(needed)} per device ({detail}), more than the "
        f"{gb(free)} free in {where}; lower {largest.flag}"
    )


# The agent state's part: what it holds, the flag that sizes it, and the copies an
# update keeps alive (IMPALA's shifted parameter buffer is written beside the old one;
# Ape-X's replay is updated in place), as XLA's memory analysis shows.
AGENT_STATE = {
    "impala": ("lagged parameter copies", "--policy_lag", 2),
    "apex": ("replay", "--buffer_capacity", 1),
}
FLAGS = ("num_envs", "rollout_len", "policy_lag", "buffer_capacity", "num_seeds")


def run_parts(config: Any, abstract_state: Any, obs_shape: tuple[int, ...],
              env_steps_per_device: int) -> list[Part]:
    """The parts of a run of ``config`` whose state is ``abstract_state`` (a
    ``TrainState`` or ``HostState`` of ``ShapeDtypeStruct`` with shardings)."""
    what, flag, copies = AGENT_STATE.get(config.agent, ("agent state", "--num_envs", 1))
    parts = [
        Part("parameters and optimizer state", "--hidden_sizes",
             per_device_bytes((abstract_state.params, abstract_state.opt_state))),
        Part(what, flag, copies * per_device_bytes(abstract_state.agent_state)),
        rollout_part(obs_shape, np.float32, env_steps_per_device),
    ]
    env_state = getattr(abstract_state, "env_state", None)
    if env_state is not None:
        parts.append(Part("environment states", "--num_envs", per_device_bytes(env_state)))
    return parts


def flag_values(config: Any, num_seeds: int) -> dict[str, Any]:
    """``--flag -> value`` of the settings that size a run, for ``check``'s message."""
    values = {f"--{name}": getattr(config, name) for name in FLAGS if hasattr(config, name)}
    values["--num_seeds"] = num_seeds
    return values
