"""Train an agent on a gymnax environment, data-parallel over all local devices.

    python experiments/train.py                      # PPO on CartPole-v1, 5e5 env steps
    python experiments/train.py --num_seeds=3 --workdir=runs/cartpole

Writes into --workdir: metrics.jsonl, config.json, checkpoint/ (orbax, final
params), learning_curve.png. Bad input: one line on stderr, exit code 2.
"""

import os
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
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
    try:
        config = cli.config_from_flags()
        cli.check_positive(eval_episodes=FLAGS.eval_episodes, log_points=FLAGS.log_points)
        workdir = FLAGS.workdir or os.path.join(
            "runs", f"{FLAGS.env}-{FLAGS.agent}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and not FLAGS.overwrite:
            raise errors.ConfigError(
                f"--workdir={workdir} already holds a run (metrics.jsonl); "
                "choose a new --workdir or pass --overwrite"
            )
    except errors.ConfigError as e:
        cli.fail(str(e))

    from jaxrl_dist import training

    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    cli.enable_compilation_cache(FLAGS.compilation_cache, "~/.cache/jaxrl_dist/xla")
    if FLAGS.overwrite and os.path.exists(workdir):
        import shutil

        for name in ("metrics.jsonl", "config.json", "learning_curve.png", "checkpoint"):
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
    training.train(config, settings, workdir, progress=lambda s: print(s, flush=True))
    print(f"wrote metrics.jsonl, config.json, checkpoint/, learning_curve.png to {workdir}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
