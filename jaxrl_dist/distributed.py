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
      startup_timeout_s: seconds ``initialize`` waits for every process to join;
        then the process exits (code 1) with one line naming the coordinator.
    """

    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    cluster_detection: bool = False
    heartbeat_timeout_s: int = 30
    startup_timeout_s: int = 300

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
        if self.startup_timeout_s < 1:
            raise errors.ConfigError(
                f"--startup_timeout_s must be > 0, got {self.startup_timeout_s}"
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


STARTUP_EXIT_CODE = 1  # a peer missing at start-up: a fault of the launch, not a flag value


def initialize(settings: DistributedSettings) -> None:
    """Joins the multi-process run (no-op for one process). Call before any other JAX use.

    Blocks until every process has joined, at most ``settings.startup_timeout_s``
    seconds: then writes one line (``error: --startup_timeout_s=...``, naming the
    coordinator and the processes expected) to stderr and ends the process with exit
    code ``STARTUP_EXIT_CODE`` (1). JAX itself would abort with a stack trace after its
    ``initialization_timeout``, which is set later than that as a backstop; the wait is
    inside a C call, so a watchdog thread ends the process.

    Raises:
      RuntimeError: JAX was already used in this process.
    """
    if not settings.multi_process:
        return
    import threading

    import jax

    # gloo: cross-process collectives on CPU; GPU/TPU backends ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    joined = threading.Event()
    threading.Thread(target=_startup_watchdog, args=(settings, joined), daemon=True,
                     name="startup-watchdog").start()
    backstop = settings.startup_timeout_s + 60
    try:
        if settings.cluster_detection:
            jax.distributed.initialize(heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
                                       initialization_timeout=backstop)
        else:
            jax.distributed.initialize(
                settings.coordinator_address,
                settings.num_processes,
                settings.process_id,
                heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
                initialization_timeout=backstop,
            )
    finally:
        joined.set()


def _startup_watchdog(settings: DistributedSettings, joined) -> None:
    """Ends the process with one line if ``joined`` is not set within the start-up timeout."""
    import os
    import sys

    if joined.wait(settings.startup_timeout_s):
        return
    sys.stderr.write(f"error: {startup_timeout_message(settings)}\n")
    sys.stderr.flush()
    os._exit(STARTUP_EXIT_CODE)


def startup_timeout_message(settings: DistributedSettings,
                            coordinator_up: bool | None = None) -> str:
    """The one line of a start-up timeout. ``coordinator_up``: whether something listens
    at the coordinator address (``None``: probe it; process 0 hosts it itself).

    JAX does not say which processes have joined, so the line names the coordinator and
    the processes expected."""
    timeout = f"--startup_timeout_s={settings.startup_timeout_s}"
    if settings.cluster_detection:
        return (f"{timeout}: the processes of the cluster (--cluster_detection) did not all "
                f"join within {settings.startup_timeout_s} s; check that every task started")
    address, n, me = settings.coordinator_address, settings.num_processes, settings.process_id
    start_all = (f"start all {n} processes (--process_id=0..{n - 1}) with the same "
                 f"--coordinator_address and --num_processes={n}")
    if me != 0:
        if coordinator_up is None:
            coordinator_up = _listening(address)
        if not coordinator_up:
            return (f"{timeout}: process {me} found no coordinator at --coordinator_address="
                    f"{address} within {settings.startup_timeout_s} s (process 0 not started, "
                    f"or another address); {start_all}")
    return (f"{timeout}: not all --num_processes={n} processes joined the coordinator at "
            f"{address} within {settings.startup_timeout_s} s (this is process {me}); "
            f"{start_all}")


def _listening(address: str) -> bool:
    """Whether a TCP connection to ``host:port`` opens within a second."""
    import socket

    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


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


def sync(name: str) -> None:
    """Waits until every process of a multi-process run reaches ``name`` (no-op alone)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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
