"""How many threads XLA's CPU runtime runs a program's kernels on (``--cpu_threads``).

XLA's CPU client sizes its intra-op pool (the ``tf_XLAEigen`` threads that run
independent kernels and split large ones) when it is created, from the
environment variable ``PJRT_NPROC`` (then ``NPROC``), else one thread per core.
Compiling is done by other threads and is not limited by it.

Gradient steps on batches of a few hundred samples are chains of kernels of a few
µs, where handing work to a second pool thread costs more than it gains, while
large batches need every core. ``auto_threads`` therefore picks one thread only
inside the region where every agent measured won or tied (at most 512 samples per
gradient step and 64 envs, MLPs no wider than 64) and leaves everything else to
XLA's default. Only CPU-only processes are sized (``cpu_only``). Figures:
``docs/benchmarks/cpu_tuning.md``.
"""

import importlib.util
import os

# XLA reads the first of these that is set (xla/pjrt/utils.cc, DefaultThreadPoolSize).
ENV_VARS = ("PJRT_NPROC", "NPROC")

# The region where one pool thread won or tied for every agent measured (see above).
MAX_SINGLE_THREAD_BATCH = 512  # samples per gradient step, over all vmapped seeds
MAX_SINGLE_THREAD_ENVS = 64  # envs stepped per rollout step, over all vmapped seeds
MAX_SINGLE_THREAD_WIDTH = 64  # widest hidden layer
AGENTS = ("ppo", "impala", "a2c", "apex")


def samples_per_gradient_step(config) -> int:
    """Samples in one gradient step of ``config``'s learner (for one seed).

    PPO and IMPALA: a minibatch, ``num_envs · rollout_len / num_minibatches``; A2C: the
    whole rollout; Ape-X: ``batch_size`` transitions from the replay.
    """
    if config.agent == "apex":
        return config.batch_size
    num_minibatches = getattr(config, "num_minibatches", 1)
    if num_minibatches <= 0:
        return 0  # invalid; the config's own validation reports it
    return config.num_envs * config.rollout_len // num_minibatches


def auto_threads(config, num_seeds: int = 1, num_devices: int | None = None) -> int | None:
    """The intra-op pool size to use for ``config`` on one CPU device, or ``None``.

    Args:
      config: an on-device agent config (PPO, IMPALA, A2C or Ape-X), or ``None``.
      num_seeds: seeds vmapped in the program (they widen every kernel).
      num_devices: ``--num_devices``; anything but ``None`` or 1 gets ``None``
        (several devices share the pool).

    Returns:
      1 for an agent of ``AGENTS`` with an MLP torso no wider than
      ``MAX_SINGLE_THREAD_WIDTH``, at most ``MAX_SINGLE_THREAD_BATCH`` samples per
      gradient step and ``MAX_SINGLE_THREAD_ENVS`` envs (both times ``num_seeds``);
      else ``None`` (XLA's default, one thread per core).
    """
    if getattr(config, "agent", None) not in AGENTS or num_devices not in (None, 1):
        return None
    if getattr(config, "torso", "mlp") != "mlp":
        return None
    if max(getattr(config, "hidden_sizes", (0,)), default=0) > MAX_SINGLE_THREAD_WIDTH:
        return None
    batch = samples_per_gradient_step(config)
    if batch <= 0 or config.num_envs <= 0 or config.rollout_len <= 0:
        return None  # invalid; the config's own validation reports it
    if batch * num_seeds > MAX_SINGLE_THREAD_BATCH:
        return None
    if config.num_envs * num_seeds > MAX_SINGLE_THREAD_ENVS:
        return None
    return 1


def user_setting() -> str | None:
    """The pool size already set in the environment (``PJRT_NPROC`` or ``NPROC``), if any."""
    for name in ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def configured() -> int | None:
    """The pool size this process's environment asks XLA for (``None``: XLA's default)."""
    value = user_setting()
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def pool_threads() -> int | None:
    """How many ``tf_XLAEigen`` (intra-op pool) threads this process runs (Linux ``/proc``)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    count = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as f:
                count += f.read().strip() == "tf_XLAEigen"
        except OSError:
            continue
    return count


def cpu_only() -> bool:
    """True unless JAX may pick an accelerator (``JAX_PLATFORMS`` or an installed plugin).

    Looks only at the environment and installed packages: it creates no backend.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(
        importlib.util.find_spec(name) is not None for name in ("jax_plugins", "libtpu")
    )


def forced_host_devices() -> int:
    """The ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` (1 when absent)."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith("--xla_force_host_platform_device_count="):
            try:
                return int(flag.split("=", 1)[1])
            except ValueError:
                return 1
    return 1


def backend_created() -> bool:
    """Whether JAX has created its backends (after which the pool size is fixed)."""
    import sys

    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def set_threads(num_threads: int) -> None:
    """Sizes XLA's CPU intra-op pool to ``num_threads`` for this process.

    Must run before JAX creates its CPU client (the first array or compile).

    Raises:
      ValueError: ``num_threads`` < 1.
      RuntimeError: the JAX backend already exists (the setting would be ignored).
    """
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if backend_created():
        raise RuntimeError(
            "XLA's CPU thread pool is sized when JAX creates its backend; "
            "set the thread count before the first JAX computation"
        )
    os.environ[ENV_VARS[0]] = str(num_threads)


def choose(
    flag_value: int | None, config, num_seeds: int = 1, num_devices: int | None = None
) -> int | None:
    """Applies the thread count for a run and returns it (``None``: XLA's default).

    ``flag_value`` (``--cpu_threads``) wins; without it a ``PJRT_NPROC``/``NPROC``
    already in the environment is kept, and otherwise ``auto_threads`` decides on a
    CPU-only machine with one host device.

    Raises:
      ValueError, RuntimeError: as ``set_threads``.
    """
    if flag_value is not None:
        set_threads(flag_value)
        return flag_value
    if user_setting() is not None:
        return configured()
    if not cpu_only() or forced_host_devices() > 1:
        return None
    num_threads = auto_threads(config, num_seeds, num_devices)
    if num_threads is not None and not backend_created():
        set_threads(num_threads)
        return num_threads
    return None
