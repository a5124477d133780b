"""Shared absl flags and error handling for the scripts in ``experiments/``.

Every bad input ends the program with a one-line ``error: ...`` on stderr and
exit code 2, before anything is compiled or written.
"""

import dataclasses
import os
import sys

from absl import flags

from jaxrl_dist import errors
from jaxrl_dist.agents import AGENTS

# Flags that override fields of the agent's config (None: the per-env default).
CONFIG_FLAGS = (
    "num_envs", "rollout_len", "total_steps", "num_epochs", "num_minibatches", "lr",
    "objective", "policy_lag", "optimizer", "ent_coef", "gamma", "torso",
)

FLAGS = flags.FLAGS


def define_agent_flags() -> None:
    """Flags shared by train.py and benchmark.py. Unset hyperparameters take per-env defaults."""
    flags.DEFINE_string("agent", "ppo", f"Agent: one of {', '.join(AGENTS)}.")
    flags.DEFINE_string("env", "CartPole-v1", "A gymnax environment id.")
    flags.DEFINE_integer("num_envs", None, "Global number of environments (split over devices).")
    flags.DEFINE_integer("rollout_len", None, "Steps per env per update (T).")
    flags.DEFINE_integer("total_steps", None, "Environment steps per seed.")
    flags.DEFINE_integer("num_epochs", None, "PPO, IMPALA: passes over each rollout.")
    flags.DEFINE_integer("num_minibatches", None, "PPO, IMPALA: minibatches per pass.")
    flags.DEFINE_float("lr", None, "Learning rate.")
    flags.DEFINE_string("objective", None, "PPO: objective, clip (eq. 7) or kl (eq. 8).")
    flags.DEFINE_integer(
        "policy_lag", None, "IMPALA: updates by which the behaviour policy lags (0: on-policy)."
    )
    flags.DEFINE_string("optimizer", None, "adam or rmsprop (default: the agent's).")
    flags.DEFINE_float("ent_coef", None, "Entropy bonus coefficient.")
    flags.DEFINE_float("gamma", None, "Discount factor.")
    flags.DEFINE_string("torso", None, "mlp, or cnn (a 3x3x16 conv first; image observations).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("num_seeds", 1, "Independent runs vmapped in one program.")
    flags.DEFINE_integer("num_devices", None, "Devices in the data-parallel mesh (default: all).")
    flags.DEFINE_string(
        "compilation_cache", None,
        "Directory of JAX's persistent compilation cache ('' disables it).",
    )


def fail(message: str) -> None:
    """Prints ``error: message`` on one line to stderr and exits with code 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser whose errors are one line and exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    return []


def check_env_and_agent(agent: str, env_id: str) -> tuple[int, ...]:
    """The env's observation shape; raises ConfigError unless ``agent`` can act in its spaces."""
    import gymnax

    from jaxrl_dist.envs import gymnax_env

    if agent not in AGENTS:
        raise errors.ConfigError(f"--agent must be one of {', '.join(AGENTS)}, got {agent!r}")
    gymnax_env.check_env_id(env_id)
    try:
        env, params = gymnax.make(env_id)
        action_space = type(env.action_space(params)).__name__
        obs_space = type(env.observation_space(params)).__name__
        obs_shape = tuple(env.observation_space(params).shape)
    except Exception as e:  # noqa: BLE001 - any failure to build the env is bad input
        raise errors.ConfigError(f"--env={env_id} could not be created: {e}") from None
    if action_space not in AGENTS[agent].action_spaces:
        raise errors.ConfigError(
            f"--agent={agent} acts in {' or '.join(AGENTS[agent].action_spaces)} action spaces; "
            f"--env={env_id} has {action_space}"
        )
    if obs_space != "Box":
        raise errors.ConfigError(
            f"--env={env_id} has a {obs_space} observation space; only Box is supported"
        )
    return obs_shape


def check_positive(**values) -> None:
    """Raises ConfigError for the first ``flag=value`` that is not > 0."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise errors.ConfigError(f"--{name} must be > 0, got {value}")


def config_from_flags():
    """The validated config of ``--agent`` from flags over the env's defaults.

    Raises:
      ConfigError: any bad value, or a flag that does not apply to the agent.
    """
    from jaxrl_dist import agents, parallel

    obs_shape = check_env_and_agent(FLAGS.agent, FLAGS.env)
    check_positive(
        num_envs=FLAGS.num_envs, rollout_len=FLAGS.rollout_len, total_steps=FLAGS.total_steps,
        num_epochs=FLAGS.num_epochs, num_minibatches=FLAGS.num_minibatches, lr=FLAGS.lr,
        num_seeds=FLAGS.num_seeds, num_devices=FLAGS.num_devices,
    )
    overrides = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].value is not None}
    fields = {f.name for f in dataclasses.fields(agents.default_config(FLAGS.agent, FLAGS.env))}
    for name in overrides:
        if name not in fields:
            raise errors.ConfigError(f"--{name} does not apply to --agent={FLAGS.agent}")
    config = agents.default_config(FLAGS.agent, FLAGS.env, **overrides)
    if config.torso == "cnn" and len(obs_shape) != 3:
        raise errors.ConfigError(
            f"--torso=cnn needs image observations [H, W, C]; --env={FLAGS.env} has "
            f"shape {obs_shape}"
        )
    mesh = parallel.make_mesh(FLAGS.num_devices)
    config.validate(mesh.size)
    return config


def enable_compilation_cache(directory: str | None, default: str | None) -> None:
    """Turns on JAX's persistent compilation cache in ``directory`` (or ``default``)."""
    path = default if directory is None else directory
    if path:
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
