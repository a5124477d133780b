"""Train an agent on a gymnax environment, data-parallel over all local devices,
or on a Gymnasium environment with host actor threads (--env=gymnasium:<id>).

    python experiments/train.py                      # PPO on CartPole-v1, 5e5 env steps
    python experiments/train.py --num_seeds=3 --workdir=runs/cartpole
    python experiments/train.py --agent=impala --env=gymnasium:CartPole-v1

Host actors: Ctrl-C or a failed actor thread stops the run (exit 130 or 1) with
every thread joined and the last update's parameters in checkpoint/.

Writes into --workdir: metrics.jsonl, tensorboard/ (event files), config.json,
checkpoint/ (orbax, final params), learning_curve.png. Bad input: one line on stderr, exit code 2.
"""

import os
import sys
import time

from absl import app, flags, logging

from jaxrl_dist import cli, errors

cli.define_agent_flags()
flags.DEFINE_string("workdir", None, "Output directory (default: runs/<env>-<agent>-<time>).")
flags.DEFINE_bool("overwrite", False, "Allow a --workdir that already holds a run.")
flags.DEFINE_integer("eval_episodes", 32, "Greedy evaluation episodes per seed at the end.")
flags.DEFINE_integer(
    "log_points", 20, "At least this many metrics.jsonl lines (chunks must divide the updates)."
)
FLAGS = flags.FLAGS


def main(argv):
    # Before any jax call: jax logs backend probing (and orbax each save step) at INFO.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
    try:
        config = cli.config_from_flags()
        host = cli.host_settings_from_flags()
        cli.check_positive(eval_episodes=FLAGS.eval_episodes, log_points=FLAGS.log_points)
        workdir = FLAGS.workdir or os.path.join(
            "runs", f"{FLAGS.env.replace(':', '-')}-{FLAGS.agent}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and not FLAGS.overwrite:
            raise errors.ConfigError(
                f"--workdir={workdir} already holds a run (metrics.jsonl); "
                "choose a new --workdir or pass --overwrite"
            )
    except errors.ConfigError as e:
        cli.fail(str(e))

    from jaxrl_dist import training

    cli.enable_compilation_cache(FLAGS.compilation_cache, "~/.cache/jaxrl_dist/xla")
    if FLAGS.overwrite and os.path.exists(workdir):
        import shutil

        for name in ("metrics.jsonl", "config.json", "learning_curve.png", "checkpoint",
                     "tensorboard"):
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(workdir, exist_ok=True)
    settings = training.RunSettings(
        seed=FLAGS.seed,
        num_seeds=FLAGS.num_seeds,
        num_devices=FLAGS.num_devices,
        eval_episodes=FLAGS.eval_episodes,
        log_points=FLAGS.log_points,
    )
    print(f"workdir: {os.path.abspath(workdir)}", flush=True)
    progress = lambda s: print(s, flush=True)
    if host is None:
        training.train(config, settings, workdir, progress=progress)
    else:
        from jaxrl_dist import host_training

        try:
            host_training.train_host(config, settings, host, workdir, progress=progress)
        except (KeyboardInterrupt, errors.ActorError) as e:
            saved = os.path.join(workdir, "checkpoint")
            saved = f"last update's parameters in {saved}" if os.path.isdir(saved) else (
                "no update had finished, nothing saved"
            )
            interrupted = isinstance(e, KeyboardInterrupt)
            sys.stderr.write(
                ("interrupted" if interrupted else f"error: {e}")
                + f"; actor threads joined; {saved}\n"
            )
            sys.exit(130 if interrupted else 1)
    print(f"wrote metrics.jsonl, config.json, checkpoint/, learning_curve.png to {workdir}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
