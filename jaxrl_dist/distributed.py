"""Several processes (hosts) through JAX's multi-controller runtime, ``jax.distributed``.

Every process runs the same program on its own devices; ``jax.devices()`` then
lists the devices of all processes, so ``parallel.make_mesh()`` builds a global
mesh and ``lax.pmean`` inside ``shard_map`` all-reduces across processes. Each
process owns the environments of its own devices (their seeds come from their
global indices). Only process 0 writes metrics, plots and config; every process
takes part in orbax checkpoint saves (each writes the shards it holds).

On CPU the cross-process collectives are gloo's
(``jax_cpu_collectives_implementation``); on GPU NCCL and on TPU ICI/DCN are
JAX's defaults.
"""

import dataclasses
import re

from jaxrl_dist import errors


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """How this process joins a multi-process run.

    Attributes:
      coordinator_address: ``host:port`` of process 0's coordination service, or
        ``None`` for a single-process run (or cluster auto-detection).
      num_processes: processes in the run (>= 1).
      process_id: this process's index, ``0..num_processes-1``.
      cluster_detection: let JAX detect the cluster (SLURM, Open MPI, TPU pods,
        ...) instead of the three values above.
      heartbeat_timeout_s: seconds after which a silent peer counts as dead and
        every other process stops with an error.
    """

    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    cluster_detection: bool = False
    heartbeat_timeout_s: int = 30

    @property
    def multi_process(self) -> bool:
        return self.cluster_detection or self.num_processes > 1

    def validate(self) -> "DistributedSettings":
        """Raises ConfigError (naming the flag) for values that cannot work; returns self."""
        if self.num_processes < 1:
            raise errors.ConfigError(f"--num_processes must be >= 1, got {self.num_processes}")
        if self.heartbeat_timeout_s < 1:
            raise errors.ConfigError(
                f"--heartbeat_timeout_s must be >= 1, got {self.heartbeat_timeout_s}"
            )
        if self.cluster_detection:
            if self.coordinator_address or self.num_processes != 1 or self.process_id != 0:
                raise errors.ConfigError(
                    "--cluster_detection takes the layout from the cluster; do not also set "
                    "--coordinator_address, --num_processes or --process_id"
                )
            return self
        if self.num_processes == 1:
            if self.coordinator_address is not None or self.process_id != 0:
                raise errors.ConfigError(
                    "--coordinator_address and --process_id need --num_processes > 1"
                )
            return self
        if not self.coordinator_address or not re.fullmatch(
            r"[^\s:]+:\d{1,5}", self.coordinator_address
        ):
            raise errors.ConfigError(
                f"--coordinator_address must be host:port with --num_processes="
                f"{self.num_processes}, got {self.coordinator_address!r}"
            )
        if not 0 <= self.process_id < self.num_processes:
            raise errors.ConfigError(
                f"--process_id must be in 0..{self.num_processes - 1}, got {self.process_id}"
            )
        return self


def initialize(settings: DistributedSettings) -> None:
    """Joins the multi-process run (no-op for one process). Call before any other JAX use.

    Blocks until every process has joined (JAX's 300 s initialization timeout).

    Raises:
      RuntimeError: JAX was already used in this process, or the coordinator
        could not be reached.
    """
    if not settings.multi_process:
        return
    import jax

    # gloo: cross-process collectives on CPU; GPU/TPU backends ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if settings.cluster_detection:
        jax.distributed.initialize(heartbeat_timeout_seconds=settings.heartbeat_timeout_s)
    else:
        jax.distributed.initialize(
            settings.coordinator_address,
            settings.num_processes,
            settings.process_id,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
        )


def process_index() -> int:
    """This process's index (0 in a single-process run)."""
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """True on the process that writes metrics, plots and config (process 0)."""
    return process_index() == 0


def process_count() -> int:
    import jax

    return jax.process_count()


def check_same_everywhere(value: str, what: str) -> None:
    """Raises RuntimeError unless every process passes the same ``value`` (a collective:
    every process must call it). For invariants such as replicated parameters."""
    import numpy as np
    from jax.experimental import multihost_utils

    data = np.frombuffer(value.encode().ljust(128)[:128], np.uint8)
    every = np.asarray(multihost_utils.process_allgather(data))
    if not (every == every[0]).all():
        values = [bytes(row).decode().strip() for row in every]
        raise RuntimeError(f"{what} differs across processes: {values}")
