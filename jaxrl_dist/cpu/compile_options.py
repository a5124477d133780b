"""XLA:CPU compiler options: shorter compiles where a program runs once or briefly.

On CPU, compile time is mostly LLVM's. Programs that run once (the initial state,
the per-seed keys, the greedy evaluation) compile at backend optimisation level 0
without XLA's fusion emitters: they compile several times faster and their
slower run is negligible. The training chunk compiles at level 2, which compiles
markedly faster than XLA's default 3 at no measured step cost.

The chunk can also skip the fusion emitters (the ``quick`` tier): it compiles
faster but steps slower, a net gain only for short runs, so ``chunk_tier("auto")``
picks it for runs of at most ``QUICK_CHUNK_MAX_ENV_STEPS`` env steps (all seeds).
The tiers agree up to float rounding. A tier is how a program compiles, not what
a run is: it is not part of a checkpoint's identity, and a run resumes under any
tier or platform. Figures: ``docs/benchmarks/compile_time.md``.
"""

from typing import Any

import jax

# XLA's DebugOptions fields: level 0 = no LLVM optimisation of the generated kernels,
# 3 = XLA's default.
_RUN_ONCE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_TRAINING = {"xla_backend_optimization_level": 2}
_QUICK_TRAINING = {**_TRAINING, "xla_cpu_use_fusion_emitters": False}

QUICK_CHUNK_MAX_ENV_STEPS = 500_000  # where the quick tier's slower steps cancel its saving


def run_once() -> dict[str, Any]:
    """XLA:CPU ``compiler_options`` for a program that runs once: level 0, no fusion
    emitters."""
    return dict(_RUN_ONCE)


def training(quick: bool = False) -> dict[str, Any]:
    """XLA:CPU ``compiler_options`` for the training step or chunk.

    Args:
      quick: also skip XLA's fusion emitters (compiles faster, steps slower).

    Returns:
      Backend optimisation level 2 (and no fusion emitters if ``quick``); ``{}``
      when ``jax_disable_most_optimizations`` is set (an explicit level would
      override that flag's level 0).
    """
    if jax.config.read("jax_disable_most_optimizations"):
        return {}
    return dict(_QUICK_TRAINING if quick else _TRAINING)


def chunk_tier(tier: str, env_steps: int) -> str:
    """Resolves ``--chunk_compile`` to the tier that takes effect on CPU.

    Args:
      tier: ``"auto"``, ``"quick"`` or ``"optimized"`` (``tuning.Tuning.chunk_tier``
        checks it before calling); ``"auto"`` picks quick for runs of at most
        ``QUICK_CHUNK_MAX_ENV_STEPS`` env steps.
      env_steps: the whole run's env steps over all seeds.

    Returns:
      ``"quick"`` or ``"optimized"``; ``"default"`` where the two tiers compile the
      same (``jax_disable_most_optimizations`` set).
    """
    if training(quick=True) == training(quick=False):
        return "default"
    if tier == "auto":
        return "quick" if env_steps <= QUICK_CHUNK_MAX_ENV_STEPS else "optimized"
    return tier
