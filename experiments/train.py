"""Train an agent on a gymnax environment, data-parallel over all devices,
or on a Gymnasium environment with host actor threads (--env=gymnasium:<id>).

    python experiments/train.py                      # PPO on CartPole-v1, 5e5 env steps
    python experiments/train.py --num_seeds=3 --workdir=runs/cartpole
    python experiments/train.py --agent=impala --env=gymnasium:CartPole-v1
    python experiments/train.py --workdir=runs/cartpole --resume   # after a kill

Several processes (one per host; gloo collectives on CPU):

    python experiments/train.py --coordinator_address=host0:1234 --num_processes=2 \\
        --process_id=0 --workdir=/shared/run   # and --process_id=1 on the other host

Every process must be given the same shared --workdir (checked at start-up: exit 2),
and all must join within --startup_timeout_s (else one line, exit 1).

Ctrl-C, SIGTERM, a failed actor thread or a non-finite loss stops the run (exit 130,
143, 1, 1) with the last good state in checkpoints/ (and, for host actors, every
thread joined); after SIGTERM the process ends within 10 s even if blocked.

Writes into --workdir: metrics.jsonl, tensorboard/ (event files), config.json,
checkpoints/ (orbax, whole-run state, for --resume), checkpoint/ (orbax, final
params), learning_curve.png. Bad input: one line on stderr, exit code 2.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

from jaxrl_dist import api, cli, errors
from jaxrl_dist.run import sigterm

cli.define_agent_flags()
cli.define_distributed_flags()
flags.DEFINE_string("workdir", None, "Output directory (default: runs/<env>-<agent>-<time>).")
flags.DEFINE_bool("overwrite", False, "Allow a --workdir that already holds a run.")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")
cli.DEFINE_integer(
    "checkpoint_every", None,
    "Updates between whole-run checkpoints (default: about a tenth of the run, at least "
    "5e5 env steps apart).",
)
flags.DEFINE_string(
    "wandb_project", None, "Also log metrics to this Weights & Biases project (needs wandb)."
)
cli.DEFINE_integer("eval_episodes", 32, "Greedy evaluation episodes per seed at the end.")
cli.DEFINE_integer(
    "log_points", 20, "At least this many metrics.jsonl lines (chunks must divide the updates)."
)
cli.DEFINE_integer(
    "eval_every", 0,
    "Env steps per seed between greedy evaluations during training, logged as "
    "eval/episode_return (0: only the final one).",
)
flags.DEFINE_string(
    "config", None,
    "A finished run's config.json: run that configuration again (flags given beside it "
    "override its values).",
)
flags.DEFINE_bool(
    "print_config", False,
    "Print the resolved config (agent and env defaults, --config, flags) as JSON and exit.",
)
flags.adopt_module_key_flags(cli)  # --help lists them
FLAGS = flags.FLAGS


def check_workdir_writable(workdir: str) -> None:
    """Creates ``workdir`` (and its parents) if needed; ConfigError if that fails or it
    cannot be written (before anything compiles)."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise errors.ConfigError(
            f"--workdir={workdir} cannot be created: {e.strerror or e}"
        ) from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise errors.ConfigError(f"--workdir={workdir} is not writable")


def apply_config_file(path: str) -> None:
    """Sets every flag that ``path`` (a run's config.json) names and the command line
    does not give (``config_flags.file_values``). Raises ConfigError."""
    from jaxrl_dist.cli import config_flags

    saved = config_flags.read_config_file(path)
    for name, value in config_flags.file_values(saved, set(FLAGS)).items():
        if not FLAGS[name].present:
            FLAGS[name].value = [str(v) for v in value] if isinstance(value, list) else value


def check_flags(argv):
    """Checks what needs no JAX backend; the distributed settings (exit 2 on bad input)."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
    try:
        if FLAGS.config:
            apply_config_file(FLAGS.config)
        dist = cli.distributed_settings_from_flags()
        cli.check_positive(
            eval_episodes=FLAGS.eval_episodes, log_points=FLAGS.log_points,
            checkpoint_every=FLAGS.checkpoint_every,
        )
        settings_from_flags().check()  # --eval_every and the rest, before any directory
        from jaxrl_dist.run import writers

        writers.check_wandb(FLAGS.wandb_project)
        if FLAGS.workdir is not None and not FLAGS.workdir.strip():
            raise errors.ConfigError(
                f"--workdir must name a directory, got {FLAGS.workdir!r} (leave the flag "
                "out for runs/<env>-<agent>-<time>)"
            )
        if FLAGS.resume and not FLAGS.workdir:
            from jaxrl_dist.run import settings

            raise errors.ConfigError(settings.RESUME_NEEDS_WORKDIR)
        # Before anything creates the JAX backend, which fixes its thread pool.
        cli.configure_cpu_threads(dist.multi_process)
    except errors.ConfigError as e:
        cli.fail(str(e))
    return dist


def print_config(config, host) -> None:
    """Prints the resolved config (and host-actor layout) as one JSON object; exit 0."""
    import dataclasses

    from jaxrl_dist.run import writers

    record = {"agent": config.agent, **{k: writers.jsonable(v) for k, v in
                                        dataclasses.asdict(config).items()}}
    if host is not None:
        record["host"] = {k: writers.jsonable(v) for k, v in dataclasses.asdict(host).items()}
    print(json.dumps(record, indent=1))
    sys.stdout.flush()
    os._exit(0)


def check_run():
    """``(config, host settings, workdir, created)`` after the checks that need the
    joined processes; every process stops with the first one's error (exit 2)."""
    from jaxrl_dist.run import shared_dir

    try:
        config = cli.config_from_flags()
        host = cli.host_settings_from_flags()
        if FLAGS.print_config:
            print_config(config, host)
        workdir = FLAGS.workdir or os.path.join(
            "runs", f"{FLAGS.env.replace(':', '-')}-{FLAGS.agent}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        # The API's checks (the resume check among them), before the workdir is touched.
        api.check(config, workdir=workdir, **train_settings(host))
        created = not os.path.exists(workdir)  # by this run: removed if refused while empty
        check_workdir_writable(workdir)
        # One directory for every process: orbax's saves wait for all of them there.
        shared_dir.check(workdir)
    except errors.ConfigError as e:
        shared_dir.report_failure(str(e))  # the other processes stop with it too
        cli.fail(str(e))
    return config, host, workdir, created


def remove_if_empty(workdir: str) -> None:
    """Removes ``workdir`` if it holds nothing (a directory this run made and left)."""
    import contextlib

    with contextlib.suppress(OSError):  # not empty (or gone): kept as it is
        os.rmdir(workdir)


def train_settings(host) -> dict:
    """``api.train``'s settings from the flags: the run's and, for host actors,
    the layout's (``host``: ``cli.host_settings_from_flags()``)."""
    import dataclasses

    layout = {} if host is None else dataclasses.asdict(host)
    return {**dataclasses.asdict(settings_from_flags()), **layout}


def settings_from_flags():
    from jaxrl_dist.run.settings import RunSettings

    return RunSettings(
        seed=FLAGS.seed,
        num_seeds=FLAGS.num_seeds,
        num_devices=FLAGS.num_devices,
        eval_episodes=FLAGS.eval_episodes,
        log_points=FLAGS.log_points,
        eval_every=FLAGS.eval_every,
        checkpoint_every=FLAGS.checkpoint_every,
        resume=FLAGS.resume,
        overwrite=FLAGS.overwrite,
        wandb_project=FLAGS.wandb_project,
        chunk_compile=FLAGS.chunk_compile,
    )


def stopped(error: BaseException, host, workdir: str) -> None:
    """Reports a run stopped by Ctrl-C, SIGTERM or a failed actor and exits (130, 143,
    1), once what finished is kept."""
    from jaxrl_dist import tuning

    terminated = sigterm.received()
    interrupted = isinstance(error, KeyboardInterrupt)
    why = ("terminated (SIGTERM)" if terminated else "interrupted") if interrupted else (
        f"error: {error}")
    code = (sigterm.EXIT_CODE if terminated else 130) if interrupted else 1
    if host is None:
        sys.stderr.write(f"{why}; state saved in checkpoints/ (continue with --resume)\n")
    else:
        saved = os.path.join(workdir, "checkpoint")
        saved = f"last update's parameters in {saved}" if os.path.isdir(saved) else (
            "no update had finished, nothing saved"
        )
        resumable = os.path.isdir(os.path.join(workdir, "checkpoints"))
        sys.stderr.write(
            f"{why}; actor threads joined; {saved}"
            + ("; the last periodic whole-run checkpoint is in checkpoints/ (--resume)"
               if resumable else "") + "\n"
        )
    # Threads joined, checkpoint and metrics written and closed: on CPU skip the
    # interpreter's teardown (cpu/process_exit.py).
    if host is not None or terminated:
        tuning.exit_process(code)
    sys.exit(code)


def main(argv):
    sigterm.handle()
    # Before any jax call: jax logs backend probing (and orbax each save step) at INFO.
    logging.set_verbosity(logging.WARNING)
    dist = check_flags(argv)
    from jaxrl_dist import distributed

    # Joins the other processes before anything else touches JAX (at most
    # --startup_timeout_s: then one line, exit 1).
    distributed.initialize(dist)
    sigterm.handle()  # back from JAX's preemption notifier
    config, host, workdir, created = check_run()
    from jaxrl_dist import tuning

    cli.enable_compilation_cache(FLAGS.compilation_cache, "~/.cache/jaxrl_dist/xla")
    primary = distributed.is_primary()
    if primary:
        print(f"workdir: {os.path.abspath(workdir)}", flush=True)
    progress = lambda s: print(s, flush=True)
    try:
        api.train(config, workdir=workdir, log=progress, **train_settings(host))
    except errors.ConfigError as e:
        if created and primary:  # refused before anything was written (the memory check)
            remove_if_empty(workdir)
        cli.fail(str(e))
    except errors.NonFiniteError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    except (KeyboardInterrupt, errors.ActorError) as e:
        stopped(e, host, workdir)
    if primary:
        print(f"wrote metrics.jsonl, config.json, checkpoints/, checkpoint/, "
              f"learning_curve.png to {workdir}")
    if distributed.process_count() == 1:
        tuning.exit_process(0)  # on CPU: without the interpreter's teardown


def run_main(argv):
    """``main``; after a SIGTERM outside training (start-up, compile is inside), exit 143."""
    try:
        main(argv)
    except KeyboardInterrupt:
        if not sigterm.received():
            raise
        sys.stdout.flush()
        sys.stderr.write("terminated (SIGTERM)\n")
        sys.stderr.flush()
        os._exit(sigterm.EXIT_CODE)


if __name__ == "__main__":
    app.run(run_main, flags_parser=cli.parse_flags)
