"""XLA compiler options for programs that run once per training run.

A run compiles three programs: the initial state, the chunk of updates, and the
greedy evaluation. The first and last each run once (the evaluation a few hundred
small steps), so on CPU their compile time is nearly all of their cost: LLVM's
default optimisation (``-O3``-like) spends ~3.4 s compiling PPO's initial state
(orthogonal initialisation, env resets) and ~1.5 s the evaluation on a 2-core VM,
versus ~1.5 s and ~0.8 s at level 0, where they then run in ~0.01 s and ~0.04 s
instead of ~0.003 s and ~0.009 s (measured 2026-11-22 on this project's 2-core
CPU VM, jax 0.10.2, PPO CartPole defaults; ``/tmp`` scripts, see BUILD.md). The
values computed are the same (tested in ``tests/test_compile_options.py``).

The training chunk runs for most of the run, yet level 2 (LLVM's ``-O2``-like
pipeline instead of the default 3) compiles it ~25 % faster with no measurable
cost: PPO CartPole 4 × 128, ten paired runs (one per core, simultaneously,
alternating cores) gave 103.2k vs 103.7k env steps/s (level 3 vs 2) and 13.1-15.0 s
vs 10.2-12.1 s single-core compile; 40 updates give bit-identical parameters. Most
of the compile is LLVM optimising the unrolled threefry hashes of ``jax.random``
(about 4.6 of 8.1 CPU-seconds), which level 2 does not vectorise as hard.
"""

from typing import Any

import jax

# XLA's DebugOptions field: 0 = no LLVM optimisation of the generated kernels,
# 3 = XLA's default.
_RUN_ONCE_CPU = {"xla_backend_optimization_level": 0}
_TRAINING_CPU = {"xla_backend_optimization_level": 2}


def run_once(platform: str | None = None) -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` of a program that runs once.

    Args:
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...; ``None``: ``jax.default_backend()``.

    Returns:
      The options dict: XLA's backend optimisation level 0 on CPU, none elsewhere
      (not measured there; accelerator compile time is mostly not LLVM's).
    """
    platform = platform or jax.default_backend()
    return dict(_RUN_ONCE_CPU) if platform == "cpu" else {}


def training(platform: str | None = None) -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` of the training step or chunk.

    Args:
      platform: as for ``run_once``.

    Returns:
      XLA's backend optimisation level 2 on CPU, none elsewhere.
    """
    platform = platform or jax.default_backend()
    return dict(_TRAINING_CPU) if platform == "cpu" else {}
