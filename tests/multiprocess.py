"""Launching experiments/*.py as several jax.distributed processes on localhost."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "experiments", "train.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict:
    """The child's environment: ``devices`` CPU devices, and XLA's backend optimizations
    off (``JAX_DISABLE_MOST_OPTIMIZATIONS``, as conftest's ``fast_compile``): these runs
    check mechanics (equality across layouts, resume, failures), not learning speed, and
    compiling takes about half as long (a 2-device PPO run: 28 s -> 18 s)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    return env


def start(script: str, args: list[str], devices: int = 1, env_extra: dict | None = None,
          **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, *args], env=dict(child_env(devices), **(env_extra or {})),
        cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )


def start_processes(script: str, args: list[str], num_processes: int, devices: int = 1,
                    extra: dict[int, list[str]] | None = None) -> list[subprocess.Popen]:
    """``num_processes`` processes of ``script`` joined through a localhost coordinator."""
    address = f"localhost:{free_port()}"
    return [
        start(script, [*args, f"--coordinator_address={address}",
                       f"--num_processes={num_processes}", f"--process_id={i}",
                       *(extra or {}).get(i, [])], devices)
        for i in range(num_processes)
    ]


def wait_all(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, out, err))
    return results


def leaves(tree) -> list:
    """The array leaves of a nested dict, in key order."""
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    return [tree]
