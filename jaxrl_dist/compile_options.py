"""XLA compiler options that shorten a run's compile time on CPU.

A run compiles a few programs besides its training chunk: the initial state, the
per-seed keys and the greedy evaluation run once each (the evaluation a few hundred
small steps), so on CPU their compile time is nearly all of their cost. At XLA's
backend optimisation level 0 PPO CartPole's initial state compiles in ~1.2-1.6 s
instead of ~3.4 s and the evaluation in ~0.6 s instead of ~1.5 s; they then run in
~0.01 s and ~0.04 s instead of ~0.003 s and ~0.01 s (measured 2026-11-22 on this
project's 2-core CPU VM, jax 0.10.2). The keys and evaluation returns are the same;
the initial parameters and env resets agree up to float rounding (LLVM contracts multiply-adds into
FMAs only at the higher levels), so a run's trajectory differs from one whose
initial state was compiled at level 3, as with any change of summation order.
Since 2026-12-02 these run-once programs also skip XLA's fusion emitters
(``xla_cpu_use_fusion_emitters=False``, the older loop emitter): PPO CartPole's
initial state then compiles in 0.58-0.69 s instead of 1.18-1.38 s (three alternating
pairs, Zen 5 VM), with the same values to the printed precision; in five alternating
pairs of the default ``train.py`` run against the tree before, ``init_s`` 1.0-1.5 s
against 1.5-2.0 s. The initial parameters again differ by float rounding only, so the
default run's ``params_sha256`` changed (greedy evaluation 500 either way). For the
training chunk the same option shortened the compile by ~1-2 s but made the steps
13-15 % slower (BUILD.md), so the chunk keeps the fusion emitters.

The training chunk runs for most of the run, yet level 2 (instead of XLA's default
3) compiles it ~25 % faster at no measured cost: PPO CartPole 4 × 128, ten paired
runs (one per core, simultaneously, alternating cores) gave 103.2k vs 103.7k env
steps/s (level 3 vs 2) and 12.7-16.3 s vs 10.2-12.1 s single-core compiles. The
parameters agree up to float rounding (``tests/test_compile_options.py``): one seed
of the default config stayed bit-identical for 40 updates, but with vmapped seeds
some multiply-adds are contracted differently (~1e-9 after 6 updates). XLA's
``ir_compiler`` timing log attributed about 4.6 of 8.1 LLVM CPU-seconds to the
threefry hashes of ``jax.random``, yet ``JAX_DEFAULT_PRNG_IMPL=unsafe_rbg`` (no
threefry) did not compile the run faster (2 paired runs, 2026-11-22).
"""

from typing import Any

import jax

# XLA's DebugOptions field: 0 = no LLVM optimisation of the generated kernels,
# 3 = XLA's default.
_RUN_ONCE_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_TRAINING_CPU = {"xla_backend_optimization_level": 2}


def run_once(platform: str | None = None) -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` of a program that runs once.

    Args:
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...; ``None``: ``jax.default_backend()``.

    Returns:
      The options dict: XLA's backend optimisation level 0 and no fusion emitters
      on CPU, none elsewhere
      (not measured there; accelerator compile time is mostly not LLVM's).
    """
    platform = platform or jax.default_backend()
    return dict(_RUN_ONCE_CPU) if platform == "cpu" else {}


def training(platform: str | None = None) -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` of the training step or chunk.

    Args:
      platform: as for ``run_once``.

    Returns:
      XLA's backend optimisation level 2 on CPU, none elsewhere or when
      ``jax_disable_most_optimizations`` is set (its level 0 then applies).
    """
    platform = platform or jax.default_backend()
    if platform != "cpu" or jax.config.read("jax_disable_most_optimizations"):
        return {}  # an explicit level would override that flag's level 0
    return dict(_TRAINING_CPU)
