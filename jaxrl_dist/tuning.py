"""The one switch between CPU-tuned and plain programs.

``for_platform(platform)`` (or ``for_mesh(mesh)``, from the devices a program
runs on) returns a ``Tuning``: on CPU it hands out the helpers of
``jaxrl_dist.cpu`` (the Dense layout with a transposing backward pass, the
convolution whose backward pass is laid out as forward convolutions, the
sort-free shuffle, XLA:CPU compiler options); on any other platform the plain
pieces (``flax.linen.Dense``'s own dot, ``flax.linen.Conv``'s own convolution,
``jax.random.permutation``, XLA's default compile options). No other module picks between the two.

Both kinds compute the same functions; results differ by float rounding only
(``tests/test_tuning.py``).
"""

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dist import errors

CPU = "cpu"

# ``--chunk_compile``: how the on-device training chunk compiles on CPU (quick: shorter
# compile, slower steps; auto: by the run's size, cpu.compile_options). One way elsewhere.
CHUNK_TIERS = ("auto", "quick", "optimized")


class Tuning(NamedTuple):
    """How programs for devices of ``platform`` are built and compiled.

    ``platform`` is a ``jax.Device.platform`` (``"cpu"``, ``"gpu"``, ``"cuda"``,
    ``"rocm"``, ``"tpu"``, ...). Only ``"cpu"`` turns the CPU helpers on.
    """

    platform: str

    @property
    def cpu(self) -> bool:
        return self.platform == CPU

    @property
    def dot_general(self) -> Callable | None:
        """The ``dot_general`` of every ``flax.linen.Dense`` of the MLP networks.

        CPU: ``cpu.matmul.dense_dot_general`` (its backward pass materialises ``xᵀ``
        so that all three dots take XLA:CPU's fast kernels); elsewhere ``None``
        (flax's own ``lax.dot_general``).
        """
        if not self.cpu:
            return None
        from jaxrl_dist.cpu import matmul

        return matmul.dense_dot_general

    @property
    def conv_general_dilated(self) -> Callable | None:
        """The ``conv_general_dilated`` of every ``flax.linen.Conv`` of the torsos.

        CPU: ``cpu.conv.conv_general_dilated`` (its backward pass computes both
        gradients as forward-style convolutions, which XLA:CPU keeps on its fast
        kernels inside ``lax.scan`` too); elsewhere ``None`` (flax's own
        ``lax.conv_general_dilated``).
        """
        if not self.cpu:
            return None
        from jaxrl_dist.cpu import conv

        return conv.conv_general_dilated

    def permutations(self, keys: jax.Array, n: int) -> jax.Array:
        """``R`` uniformly random permutations of ``0..n-1``, ``[R, n]`` int32, one per key.

        CPU: ``cpu.shuffle.permutations`` (ranks of random keys, no sort, for
        short axes); elsewhere ``jax.random.permutation`` per key. The two give
        different permutations for the same keys, each uniformly random.

        Raises:
          ValueError: ``n < 1`` or ``keys`` not 1-D.
        """
        if self.cpu:
            from jaxrl_dist.cpu import shuffle

            return shuffle.permutations(keys, n)
        if n < 1:
            raise ValueError(f"permutation length must be >= 1, got {n}")
        if keys.ndim != 1:
            raise ValueError(f"keys must be [R], got shape {keys.shape}")
        return jax.vmap(lambda k: jax.random.permutation(k, n).astype(jnp.int32))(keys)

    def run_once_options(self) -> dict[str, Any]:
        """``compiler_options`` for ``jax.jit`` of a program that runs once (initial
        state, keys, evaluation): ``cpu.compile_options.run_once()`` on CPU, ``{}``
        elsewhere."""
        if not self.cpu:
            return {}
        from jaxrl_dist.cpu import compile_options

        return compile_options.run_once()

    def training_options(self, tier: str = "optimized") -> dict[str, Any]:
        """``compiler_options`` for ``jax.jit`` of the training step or chunk, compiled in
        ``tier`` (``chunk_tier``'s result): ``cpu.compile_options.training`` on CPU,
        ``{}`` elsewhere."""
        if not self.cpu:
            return {}
        from jaxrl_dist.cpu import compile_options

        return compile_options.training(quick=tier == "quick")

    def chunk_tier(self, tier: str, env_steps: int) -> str:
        """The ``--chunk_compile`` tier that takes effect for a run of ``env_steps`` env
        steps over all seeds: ``"quick"`` or ``"optimized"`` on CPU, ``"default"``
        elsewhere (one way to compile there).

        Raises:
          ConfigError: ``tier`` is not one of ``CHUNK_TIERS``.
        """
        if tier not in CHUNK_TIERS:
            raise errors.ConfigError(
                f"--chunk_compile must be one of {', '.join(CHUNK_TIERS)}, got {tier!r}"
            )
        if not self.cpu:
            return "default"
        from jaxrl_dist.cpu import compile_options

        return compile_options.chunk_tier(tier, env_steps)


def for_platform(platform: str) -> Tuning:
    """The tuning of programs that run on devices of ``platform``."""
    return Tuning(platform)


def for_mesh(mesh) -> Tuning:
    """The tuning of programs that run on ``mesh``'s devices (all of one platform)."""
    return for_platform(mesh.devices.flat[0].platform)


def for_default_backend() -> Tuning:
    """The tuning of ``jax.default_backend()``'s devices (creates the backend)."""
    return for_platform(jax.default_backend())


def deferred_imports(*names: str) -> contextlib.AbstractContextManager:
    """While importing a library, defers its imports of ``names`` (plotting modules it
    needs only for rendering) when this process will run on CPU only
    (``cpu.threads.cpu_only``, decided without creating a JAX backend); a no-op
    otherwise. See ``cpu.deferred_import``."""
    from jaxrl_dist.cpu import deferred_import, threads

    if not threads.cpu_only():
        return contextlib.nullcontext()
    return deferred_import.deferred(*names)


def exit_process(code: int, platform: str | None = None) -> None:
    """Ends a finished process with ``code`` at once when it ran on CPU
    (``cpu.process_exit``: no interpreter teardown); on another platform returns, and
    the caller exits normally."""
    if (platform or jax.default_backend()) != CPU:
        return
    from jaxrl_dist.cpu import process_exit

    process_exit.exit_now(code)
