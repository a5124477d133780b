"""Throughput benchmark: environment steps per second after compilation.

    python experiments/benchmark.py                               # PureJaxRL's CartPole config
    python experiments/benchmark.py --num_envs=2048 --rollout_len=16
    python experiments/benchmark.py --agent=impala      # also: --agent=a2c, --agent=apex
    python experiments/benchmark.py --env=gymnasium:CartPole-v1 --envs_per_thread=64

Host actors (--env=gymnasium:<id>): training steps/s is reported beside the raw
rate of the same vector envs stepped with random actions by the same threads
(no inference, no learning), and their ratio.

Paired A/B against another checkout (both at once, one pinned core each, cores
swapping every round; see compare.py):

    python experiments/benchmark.py --compare_with=/tmp/base --compare_rounds=4

Throughput across devices and processes, with scaling efficiency (see sweep.py):

    python experiments/benchmark.py --sweep --num_envs=256 --total_steps=2000000

Builds the initial state (timed as init_s, its compile included), compiles the
training chunk (timed as compile_s; at --chunk_compile=optimized unless the flag is
given, since this measures the throughput of long runs; chunk_tier in the JSON), then
times the training run through the same host loop as experiments/train.py (train_s;
sps = env_steps / train_s);
run_total_s is the whole run, evaluation included. Prints a table and, as its last line,
one JSON object with sps, compile_s, env_steps, num_devices, backend, ...
The persistent compilation cache is off unless --compilation_cache is given, so
compile_s is a cold compile.
"""

import json
import math
import os
import platform
import resource
import sys
import time

from absl import app, flags, logging

from jaxrl_dist import cli, errors, tuning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
import sweep  # noqa: E402

cli.define_agent_flags()
cli.define_distributed_flags()
flags.DEFINE_float(
    "raw_seconds", 5.0, "Host actors: seconds of random-action stepping for the raw rate."
)
cli.DEFINE_integer("repeats", 1, "Timed runs; the best sps is reported (each run recompiles).")
flags.DEFINE_enum(
    "kernels", "auto", ["auto", "plain", "cpu"],
    "On-device path: auto = the devices' own tuning (jaxrl_dist.tuning); plain = the "
    "accelerator programs (flax's Dense dot, jax.random.permutation) on any backend; cpu = "
    "the CPU helpers' kernels (Dense backward layout, sort-free shuffle) on any backend, "
    "with the backend's own compile options off CPU. For comparing the two network paths.",
)
FLAGS = flags.FLAGS


def main(argv):
    # Before any jax call: jax logs backend probing (and orbax each save step) at INFO.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
    t0 = time.time()
    try:
        dist = cli.distributed_settings_from_flags()
        cli.check_positive(raw_seconds=FLAGS.raw_seconds)
        if not math.isfinite(FLAGS.raw_seconds):
            raise errors.ConfigError(f"--raw_seconds must be finite, got {FLAGS.raw_seconds}")
        if FLAGS.sweep:
            sweep.check_flags()
        other = compare.check_flags()
        # Before anything creates the JAX backend, which fixes its thread pool.
        cli.configure_cpu_threads(dist.multi_process)
    except errors.ConfigError as e:
        cli.fail(str(e))
    from jaxrl_dist import distributed

    distributed.initialize(dist)
    try:
        config = cli.config_from_flags()
        host = cli.host_settings_from_flags()
        cli.check_positive(repeats=FLAGS.repeats)
    except errors.ConfigError as e:
        cli.fail(str(e))
    if FLAGS.sweep:
        sweep.run_sweep(config)
        return
    if other is not None:
        compare.run_compare(other)
        return
    import jax

    from jaxrl_dist.anakin import training

    cli.enable_compilation_cache(FLAGS.compilation_cache, None)
    settings = training.RunSettings(
        seed=FLAGS.seed, num_seeds=FLAGS.num_seeds, num_devices=FLAGS.num_devices,
        eval_episodes=1, log_points=20, progress_every_s=1e9,
        # Throughput of long runs: the quick tier that auto picks for short ones trades
        # step speed for compile time (cpu/compile_options.py).
        chunk_compile=FLAGS.chunk_compile if FLAGS["chunk_compile"].present else "optimized",
    )
    if host is not None:
        return benchmark_host(config, settings, host, t0)
    runs = []
    for _ in range(FLAGS.repeats):
        t_run = time.time()
        summary = training.train(config, settings, None, log=lambda s: None,
                                 tuning_=kernels_tuning(FLAGS.kernels))
        summary["total_s"] = time.time() - t_run
        runs.append(summary)
    best = max(runs, key=lambda r: r["sps"])
    result = {
        "agent": FLAGS.agent,
        "env": config.env,
        "num_envs": config.num_envs,
        "rollout_len": config.rollout_len,
        "num_epochs": getattr(config, "num_epochs", 1),
        "num_minibatches": getattr(config, "num_minibatches", 1),
        "num_seeds": FLAGS.num_seeds,
        "env_steps": best["env_steps"] * FLAGS.num_seeds,
        "sps": round(best["sps"]),
        "sps_all_repeats": [round(r["sps"]) for r in runs],
        "init_s": round(best["init_s"], 2),
        "compile_s": round(best["compile_s"], 2),
        "chunk_compile": settings.chunk_compile,  # the setting
        "chunk_tier": best["chunk_tier"],  # the tier it took (tuning.Tuning.chunk_tier)
        "train_s": round(best["train_s"], 2),
        "run_total_s": round(best["total_s"], 2),
        "process_s": round(time.time() - t0, 2),
        # Ape-X: gradient steps per second (all seeds), each on batch_size transitions.
        "learner_steps_per_s": round(
            config.num_updates * config.learner_steps * FLAGS.num_seeds / best["train_s"], 1
        ) if hasattr(config, "learner_steps") else None,
        "final_train_return": best["history"][-1]["train/episode_return"],
        "eval_return": best["eval/episode_return"],
        "num_devices": settings.num_devices or jax.device_count(),
        "kernels": FLAGS.kernels,
        **machine_fields(),
    }
    rows = [
        ("config", f"{FLAGS.agent}: {config.num_envs} envs x {config.rollout_len} steps, "
                   f"{result['num_epochs']} epochs x {result['num_minibatches']} minibatches"),
        ("env steps", f"{result['env_steps']:,}"),
        ("env steps/s (after compile)", f"{result['sps']:,}"),
        *([("learner steps/s", f"{result['learner_steps_per_s']:,}")]
          if result["learner_steps_per_s"] else []),
        ("initial state, compile included (s)", f"{result['init_s']}"),
        ("compile of the training chunk (s)",
         f"{result['compile_s']} ({result['chunk_tier']})"),
        ("training (s)", f"{result['train_s']}"),
        ("whole run: init, compile, training, evaluation (s)", f"{result['run_total_s']}"),
        ("devices", f"{result['num_devices']} x {result['backend']}"),
        ("CPU intra-op threads", f"{result['cpu_threads'] or 'XLA default'}"),
        ("peak RSS (MB)", f"{result['peak_rss_mb']}"),
    ]
    print_table(rows, result)


def kernels_tuning(kernels: str):
    """The ``tuning_`` for ``--kernels``: None (auto), plain or CPU kernels on any backend."""
    import jax

    if kernels == "auto":
        return None
    if kernels == "plain":
        return tuning.for_platform("plain")
    if jax.default_backend() == tuning.CPU:
        return tuning.for_platform(tuning.CPU)
    return _CpuKernels(tuning.CPU)


class _CpuKernels(tuning.Tuning):
    """The CPU helpers' kernels with the accelerator's own compile options (XLA:CPU's
    options do not apply to other backends)."""

    def run_once_options(self):
        return {}

    def training_options(self, tier="optimized"):
        return {}

    def chunk_tier(self, tier, env_steps):
        return "default"


def machine_fields() -> dict:
    import jax

    from jaxrl_dist.cpu import threads as cpu_threads

    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        # XLA's CPU intra-op pool (PJRT_NPROC; None: XLA's default, one per core).
        "cpu_threads": cpu_threads.configured(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def print_table(rows, result) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    print(json.dumps(result), flush=True)


def learner_samples_per_s(config, run) -> float:
    """Transitions passed through the loss per second of training: each update's batch
    times its passes (PPO: ``num_epochs``; Ape-X: ``batch_size * learner_steps`` sampled
    from replay; IMPALA, A2C: the rollout once)."""
    updates = run["env_steps"] / config.steps_per_update
    if hasattr(config, "batch_size") and hasattr(config, "learner_steps"):
        per_update = config.batch_size * config.learner_steps
    else:
        per_update = config.steps_per_update * getattr(config, "num_epochs", 1)
    return updates * per_update / max(run["train_s"], 1e-9)


def benchmark_host(config, settings, host, t0) -> None:
    """Host actors: training sps beside the raw random-action rate of the same vector envs.

    With several processes the raw rate is measured by every process at once and summed
    (as their actors run at once in training); only process 0 prints.
    """
    import jax
    import numpy as np

    from jaxrl_dist.envs import atari, gymnasium_env
    from jaxrl_dist.sebulba import training as host_training

    runs = []
    for _ in range(FLAGS.repeats):
        runs.append(host_training.train_host(config, settings, host, None, lambda s: None))
    best = max(runs, key=lambda r: r["sps"])
    if host.ray_actors:  # processes: the same number of processes stepping at once
        from jaxrl_dist.sebulba import ray_fleet

        raw = ray_fleet.random_action_sps(
            host.ray_address, host.ray_actors, config.env, host.envs_per_thread,
            host.vectorization, FLAGS.raw_seconds, FLAGS.seed,
        )
    else:
        raw = gymnasium_env.random_action_sps(
            config.env, host.num_threads, host.envs_per_thread, host.vectorization,
            FLAGS.raw_seconds, FLAGS.seed,
        )
    num_processes = jax.process_count()
    if num_processes > 1:
        from jax.experimental import multihost_utils

        raw = float(np.sum(multihost_utils.process_allgather(np.array([raw], np.float64))))
    frames = atari.FRAME_SKIP if atari.is_atari(gymnasium_env.gymnasium_id(config.env)) else 1
    stages = {
        k.removeprefix("time/"): round(sum(h[k] for h in best["history"]), 2)
        for k in best["history"][0] if k.startswith("time/")
    }
    result = {
        "agent": FLAGS.agent,
        "env": config.env,
        "acting": "host",
        "actors": "ray" if host.ray_actors else "threads",
        "actor_threads": 0 if host.ray_actors else host.num_threads * num_processes,
        "ray_actors": host.ray_actors,
        "num_processes": num_processes,
        "envs_per_thread": host.envs_per_thread,
        "vectorization": host.vectorization,
        "actor_devices": [] if host.ray_actors else list(host.actor_devices),
        "learner_devices": list(host.learner_devices),
        "rollout_len": config.rollout_len,
        "env_steps": best["env_steps"],
        "sps": round(best["sps"]),
        "sps_all_repeats": [round(r["sps"]) for r in runs],
        "raw_random_action_sps": round(raw),
        "ratio": round(best["sps"] / raw, 3),
        "frames_per_env_step": frames,
        "env_frames_per_s": round(best["sps"] * frames),
        "learner_samples_per_s": round(learner_samples_per_s(config, best)),
        "compile_s": round(best["compile_s"], 2),
        "actors_ready_s": round(best.get("actors_ready_s", 0.0), 2),
        "train_s": round(best["train_s"], 2),
        "policy_lag_mean": round(best["policy_lag/mean"], 2),
        "stage_seconds": stages,
        "eval_return": best["eval/episode_return"],
        "process_s": round(time.time() - t0, 2),
        **machine_fields(),
    }
    rows = [
        ("config", f"{FLAGS.agent}: "
                   + (f"{host.ray_actors} Ray actor processes x " if host.ray_actors else
                      f"{result['actor_threads']} actor threads x ")
                   + f"{host.envs_per_thread} envs ({host.vectorization}) x {config.rollout_len} "
                   f"steps" + (f", {num_processes} processes" if num_processes > 1 else "")),
        ("env steps", f"{result['env_steps']:,}"),
        ("training env steps/s (after compile)", f"{result['sps']:,}"),
        ("raw random-action env steps/s", f"{result['raw_random_action_sps']:,}"),
        ("env frames/s (emulator frames: steps x frame skip)",
         f"{result['env_frames_per_s']:,}"),
        ("learner samples/s (transitions through the loss)",
         f"{result['learner_samples_per_s']:,}"),
        ("ratio (goal >= 0.7; Ray actors: >= 0.8)", f"{result['ratio']}"),
        ("compile (s)", f"{result['compile_s']}"
         + (f"; Ray actor processes up and compiled after {result['actors_ready_s']} s"
            if host.ray_actors else "")),
        ("policy lag (mean, updates)", f"{result['policy_lag_mean']}"),
        ("stage seconds (summed over process 0's threads)", json.dumps(stages)),
    ]
    if jax.process_index() == 0:
        print_table(rows, result)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
