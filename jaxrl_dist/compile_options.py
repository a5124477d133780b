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
default run's ``params_sha256`` changed (greedy evaluation 500 either way). This
was reverted the same day because PPO 4 × 128's initial parameters then depended on
the XLA thread count; it is back since the orthogonal init of a single column no
longer goes through a one-trip loop (``initializers``), with the initial states of 24
agent/env/seed configurations bit-identical on 1 and 2 threads.

The training chunk can skip the fusion emitters too (``training(quick=True)``): it
then compiles ~1.5-2 s faster but runs 20-40 % slower (PPO CartPole, 2026-12-02, Zen 5
VM, one XLA thread, two alternations each: default 32 × 64 compile 1.9-2.0 s against
3.3-3.7 s, 6.7-6.8 against 5.6-5.7 ms per update at best; 4 × 128 2.2-2.4 s against
3.4-4.0 s, 2.5-2.6 against 2.0 ms; 2048 × 16 on two threads 1.7 against 3.4 s, 90
against 67 ms). The worst of those penalties, ~1.2-3 µs per env step, cancels the
saving at about 5e5 env steps, so ``chunk_tier("auto", env_steps)`` compiles quick
for runs of at most ``QUICK_CHUNK_MAX_ENV_STEPS`` env steps (all seeds) and
optimised beyond (Ape-X's default run, 5e5 steps: compile 1.2-2.0 s shorter, steps
~5 % slower; BUILD.md). The two tiers agree up to float rounding; ``training.train``
resumes a run in the tier its checkpoint records.

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

from jaxrl_dist import errors

# XLA's DebugOptions field: 0 = no LLVM optimisation of the generated kernels,
# 3 = XLA's default.
_RUN_ONCE_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_TRAINING_CPU = {"xla_backend_optimization_level": 2}
_QUICK_TRAINING_CPU = {**_TRAINING_CPU, "xla_cpu_use_fusion_emitters": False}

CHUNK_TIERS = ("auto", "quick", "optimized")
QUICK_CHUNK_MAX_ENV_STEPS = 500_000  # where the quick tier's slower steps cancel its saving


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


def training(platform: str | None = None, quick: bool = False) -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` of the training step or chunk.

    Args:
      platform: as for ``run_once``.
      quick: also skip XLA's fusion emitters (compiles faster, runs slower; see the
        module docstring).

    Returns:
      XLA's backend optimisation level 2 (and, if ``quick``, no fusion emitters) on
      CPU; none elsewhere or when ``jax_disable_most_optimizations`` is set (its
      level 0 then applies).
    """
    platform = platform or jax.default_backend()
    if platform != "cpu" or jax.config.read("jax_disable_most_optimizations"):
        return {}  # an explicit level would override that flag's level 0
    return dict(_QUICK_TRAINING_CPU if quick else _TRAINING_CPU)


def chunk_tier(tier: str, env_steps: int, platform: str | None = None) -> str:
    """Resolves ``--chunk_compile`` to the tier that takes effect.

    Args:
      tier: one of ``CHUNK_TIERS``; ``"auto"`` picks quick for runs of at most
        ``QUICK_CHUNK_MAX_ENV_STEPS`` env steps.
      env_steps: the whole run's env steps over all seeds (not what remains of a
        resumed run, so that it resolves as the run did when it started).
      platform: as for ``run_once``.

    Returns:
      ``"quick"`` or ``"optimized"``; ``"default"`` where the two tiers compile the
      same (not CPU, or ``jax_disable_most_optimizations`` set).

    Raises:
      ConfigError: ``tier`` is not one of ``CHUNK_TIERS``.
    """
    if tier not in CHUNK_TIERS:
        raise errors.ConfigError(
            f"--chunk_compile must be one of {', '.join(CHUNK_TIERS)}, got {tier!r}"
        )
    if training(platform, quick=True) == training(platform, quick=False):
        return "default"
    if tier == "auto":
        return "quick" if env_steps <= QUICK_CHUNK_MAX_ENV_STEPS else "optimized"
    return tier


def run_tier(tier: str, saved_tier: str | None, env_steps: int,
             platform: str | None = None) -> str:
    """``chunk_tier`` for a run that may resume one whose checkpoint recorded ``saved_tier``.

    Args:
      tier, env_steps, platform: as for ``chunk_tier``.
      saved_tier: the resumed run's tier (``None``: a new run, or a checkpoint older
        than the tiers); ``"auto"`` then takes a recorded quick or optimized.

    Returns:
      The tier the chunk compiles in, as ``chunk_tier`` returns it.

    Raises:
      ConfigError: ``tier`` is not one of ``CHUNK_TIERS``, or names a CPU tier other
        than the one the resumed run compiled in.
    """
    compiled = ("quick", "optimized")  # "default": no tier applied (another platform)
    resolved = chunk_tier(
        saved_tier if tier == "auto" and saved_tier in compiled else tier, env_steps, platform
    )
    if saved_tier in compiled and resolved in compiled and resolved != saved_tier:
        raise errors.ConfigError(
            f"--resume: the run compiled its chunk {saved_tier}, --chunk_compile={tier} "
            f"compiles it {resolved}; leave the flag unset"
        )
    return resolved
