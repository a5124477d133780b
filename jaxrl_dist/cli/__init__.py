"""Shared absl flags and error handling for the scripts in ``experiments/``.

Every bad input ends the program with a one-line ``error: ...`` on stderr and
exit code 2, before anything is compiled or written.
"""

import decimal
import os
import sys

from absl import flags

from jaxrl_dist import agents, errors
from jaxrl_dist.agents import AGENTS
from jaxrl_dist.cli import config_flags

# Flags of the host-actor layout (``host_training.HostSettings``); only with gymnasium:<id>.
HOST_FLAGS = (
    "actor_threads", "envs_per_thread", "vectorization", "deterministic", "actor_devices",
    "learner_devices", "queue_size", "param_refresh_steps", "ray_actors", "ray_address",
    "terminal_on_life_loss",
)
THREAD_FLAGS = ("actor_threads", "actor_devices")  # actor threads' layout (not Ray's)
HOST_INSTEAD = {
    "num_envs": "set --actor_threads and --envs_per_thread",
    "policy_lag": "the lag is real there and is measured (--deterministic pins it to 1)",
    "num_devices": "set --actor_devices and --learner_devices",
}

FLAGS = flags.FLAGS


class IntegerParser(flags.IntegerParser):
    """absl's integer parser that also takes a whole number in scientific or decimal
    notation: ``5e5``, ``1E6``, ``2.5e3``, ``1000.0``. ``--help`` still shows an int.

    Raises (from ``parse``, which absl turns into ``flag --name=value: ...``, exit 2
    through ``parse_flags``):
      ValueError: not a number, a fraction (``1.5``), inf/nan, or out of bounds.
    """

    MAX_DIGITS = 30  # larger values are refused (int() of 1e999999999 would not finish)

    def convert(self, argument):
        if not isinstance(argument, str):
            return super().convert(argument)
        try:
            return super().convert(argument)
        except ValueError as e:
            error = e
        try:
            value = decimal.Decimal(argument.strip())
        except decimal.InvalidOperation:
            raise error from None
        if not value.is_finite():
            raise ValueError(f"{argument} is not an integer") from None
        if value != value.to_integral_value():
            raise ValueError(
                f"{argument} is not a whole number (integer flags take 500000, 5e5 or 2.5e3)"
            )
        if value != 0 and value.adjusted() >= self.MAX_DIGITS:
            raise ValueError(f"{argument} is too large")
        return int(value)


def DEFINE_integer(name: str, default: int | None, help: str,
                   lower_bound: int | None = None, upper_bound: int | None = None,
                   flag_values=FLAGS, **args):
    """``flags.DEFINE_integer`` with ``IntegerParser``: also takes ``5e5``-style whole
    numbers. Same arguments as absl's; returns the flag holder. The flag belongs to the
    caller's module (as with absl's own, so a script's ``--help`` lists its flags)."""
    parser = IntegerParser(lower_bound, upper_bound)
    module_name = sys._getframe(1).f_globals.get("__name__")
    if module_name == "__main__":
        module_name = sys.argv[0]  # absl's name for the main module
    holder = flags.DEFINE(parser, name, default, help, flag_values,
                          flags.ArgumentSerializer(), module_name=module_name, **args)
    if lower_bound is not None or upper_bound is not None:
        flags.register_validator(
            name, lambda value: value is None or not parser.is_outside_bounds(value),
            message=f"--{name} must be {parser.syntactic_help}", flag_values=flag_values,
        )
    return holder


def define_agent_flags() -> None:
    """Flags shared by train.py and benchmark.py. Unset hyperparameters take per-env defaults."""
    flags.DEFINE_string("agent", "ppo", f"Agent: one of {', '.join(AGENTS)}.")
    flags.DEFINE_string(
        "env", "CartPole-v1",
        "A gymnax id (on-device envs), or gymnasium:<id> or gymnasium:<module>:<id> (host "
        "actors; the module is imported first, as Gymnasium does).",
    )
    flags.DEFINE_list(
        "env_module", None,
        "Modules to import before --env is resolved, which register your envs: gymnax "
        "envs with jaxrl_dist.register_gymnax_env, Gymnasium envs with gymnasium.register.",
    )
    define_config_flags()
    DEFINE_integer(
        "actor_threads", None, "Host actors: actor threads per actor device (default 2)."
    )
    DEFINE_integer(
        "envs_per_thread", None, "Host actors: envs in each thread's vector env (default 8)."
    )
    flags.DEFINE_string(
        "vectorization", None, "Host actors: sync or async Gymnasium vector env (default sync)."
    )
    flags.DEFINE_bool(
        "deterministic", None,
        "Host actors: rollout r acts with parameter version r-1 exactly (reproducible).",
    )
    flags.DEFINE_list(
        "actor_devices", None,
        "Host actors: this process's device indices for inference (0).",
    )
    flags.DEFINE_list(
        "learner_devices", None,
        "Host actors: this process's device indices in the learner mesh (default: the "
        "non-actor devices); with several processes the mesh joins every process's.",
    )
    DEFINE_integer("queue_size", None, "Host actors: rollouts queued per thread (1).")
    flags.DEFINE_bool(
        "terminal_on_life_loss", None,
        "Atari games: a lost life ends the training episode (evaluation plays whole "
        "games; default false).",
    )
    DEFINE_integer(
        "param_refresh_steps", None,
        "Host actors: a thread's env steps between parameter fetches (0: every rollout).",
    )
    DEFINE_integer(
        "ray_actors", None,
        "Host actors: N > 0 Ray actor processes, each stepping --envs_per_thread envs with "
        "CPU inference, instead of actor threads (needs pip install -e \".[ray]\").",
    )
    flags.DEFINE_string(
        "ray_address", None,
        "With --ray_actors: the Ray cluster to join, 'auto' or host:port of its head node "
        "(default: a local Ray instance sized to this machine).",
    )
    DEFINE_integer("seed", 0, "Random seed.")
    DEFINE_integer("num_seeds", 1, "Independent runs vmapped in one program.")
    DEFINE_integer("num_devices", None, "Devices in the data-parallel mesh (default: all).")
    flags.DEFINE_string(
        "compilation_cache", None,
        "Directory of JAX's persistent compilation cache ('' disables it).",
    )
    flags.DEFINE_enum(
        "chunk_compile", "auto", ["auto", "quick", "optimized"],
        "CPU only: how the on-device training chunk compiles. quick skips XLA's fusion "
        "emitters (shorter compile, slower steps), optimized keeps them, auto: quick for "
        "runs of at most 5e5 env steps over all seeds (cpu/compile_options.py). Not part "
        "of a run's identity: --resume works under any tier. benchmark.py defaults to "
        "optimized.",
    )
    DEFINE_integer(
        "cpu_threads", None,
        "CPU only: threads of XLA's CPU intra-op pool (PJRT_NPROC). Default: "
        "PJRT_NPROC/NPROC if set, else 1 for small MLP configs on one CPU device (faster "
        "there, see cpu/threads.py), else one per core.",
    )


def define_distributed_flags() -> None:
    """Flags of a multi-process run (``jax.distributed``); see ``distributed.py``."""
    flags.DEFINE_string(
        "coordinator_address", None, "Multi-process: host:port of process 0's coordinator."
    )
    DEFINE_integer("num_processes", 1, "Multi-process: number of processes.")
    DEFINE_integer("process_id", 0, "Multi-process: this process's index.")
    flags.DEFINE_bool(
        "cluster_detection", False,
        "Multi-process: let JAX detect the cluster layout (SLURM, Open MPI, TPU pods).",
    )
    DEFINE_integer(
        "heartbeat_timeout_s", 30,
        "Multi-process: seconds after which a silent peer stops the run with an error.",
    )
    DEFINE_integer(
        "startup_timeout_s", 300,
        "Multi-process: seconds to wait for every process to join the coordinator; then "
        "one line naming the coordinator and the processes expected, exit code 1.",
    )


def distributed_settings_from_flags():
    """Validated ``DistributedSettings`` from the multi-process flags (no JAX call).

    Raises:
      ConfigError: a bad value.
    """
    from jaxrl_dist import distributed

    return distributed.DistributedSettings(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
        cluster_detection=FLAGS.cluster_detection,
        heartbeat_timeout_s=FLAGS.heartbeat_timeout_s,
        startup_timeout_s=FLAGS.startup_timeout_s,
    ).validate()


def define_config_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """One flag per field of every agent's config (``config_flags.fields``), default
    ``None`` (the per-agent, per-env default)."""
    for flag in config_flags.fields().values():
        text = config_flags.help_text(flag)
        if flag.kind == "int":
            DEFINE_integer(flag.name, None, text, flag_values=flag_values)
        elif flag.kind == "float":
            flags.DEFINE_float(flag.name, None, text, flag_values=flag_values)
        elif flag.kind == "bool":
            flags.DEFINE_bool(flag.name, None, text, flag_values=flag_values)
        elif flag.kind == "ints":
            flags.DEFINE_list(flag.name, None, text, flag_values=flag_values)
        else:
            flags.DEFINE_string(flag.name, None, text, flag_values=flag_values)


def config_overrides() -> dict:
    """The config fields set by flags (those that are not ``None``), as the config takes
    them. Raises ConfigError for a list flag with a non-integer element."""
    return {
        name: config_flags.value(flag, FLAGS[name].value)
        for name, flag in config_flags.fields().items() if FLAGS[name].value is not None
    }


def configure_cpu_threads(multi_process: bool = False) -> int | None:
    """Sizes XLA's CPU intra-op pool from ``--cpu_threads`` or the run's config.

    Call before anything creates the JAX backend. Automatic choice only for on-device
    (gymnax) runs in one process; a config that fails to resolve gets none (its error
    is reported by ``config_from_flags``).

    Returns:
      The pool size set or found in the environment, ``None`` for XLA's default.

    Raises:
      ConfigError: ``--cpu_threads`` < 1.
    """
    from jaxrl_dist import agents
    from jaxrl_dist.cpu import threads as cpu_threads
    from jaxrl_dist.envs import gymnasium_env

    check_positive(cpu_threads=FLAGS.cpu_threads)
    config = None
    if not multi_process and not gymnasium_env.is_gymnasium(FLAGS.env):
        try:
            config = agents.default_config(FLAGS.agent, FLAGS.env, **config_overrides())
        except (errors.ConfigError, KeyError, TypeError, ValueError):
            config = None
    try:
        return cpu_threads.choose(FLAGS.cpu_threads, config, FLAGS.num_seeds, FLAGS.num_devices)
    except RuntimeError as e:
        raise errors.ConfigError(f"--cpu_threads: {e}") from None


def fail(message: str) -> None:
    """Prints ``error: message`` on one line to stderr and exits with code 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2)


HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "-?")
HELPFULL_ARGS = ("--helpfull", "-helpfull")
DEFAULTS_NOTE = (
    "Unset hyperparameter flags take per-agent, per-env defaults: see them with "
    "--agent=A --env=E --print_config (train.py). Every flag: --helpfull."
)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser whose errors are one line and exit code 2; ``--help`` prints the
    main module's doc and flags (and where defaults are), ``--helpfull`` every module's
    flags too; both exit 0. The current directory goes first on ``sys.path``, as
    ``python -m`` puts it: ``--env_module=my_envs`` and ``gymnasium:my_envs:<id>`` import
    ``my_envs.py`` from where the script is run."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    full = any(arg in HELPFULL_ARGS for arg in argv[1:])
    if full or any(arg in HELP_ARGS for arg in argv[1:]):
        from absl import app

        app.usage(shorthelp=not full, writeto_stdout=True)
        print(f"\n{DEFAULTS_NOTE}")
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    return []


# The agent/env rule lives in the registry (the Python API uses it too).
check_env_and_agent = agents.check_env_and_agent


def check_positive(**values) -> None:
    """Raises ConfigError for the first ``flag=value`` that is not > 0."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise errors.ConfigError(f"--{name} must be > 0, got {value}")


def _device_ids(name: str) -> tuple[int, ...] | None:
    values = FLAGS[name].value
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise errors.ConfigError(
            f"--{name} must be comma-separated device indices, got {','.join(values)!r}"
        ) from None


def host_settings_from_flags():
    """``HostSettings`` from the host-actor flags (validated against the local devices),
    or ``None`` when ``--env`` is a gymnax env (on-device acting).

    Raises:
      ConfigError: a bad value.
    """
    from jaxrl_dist.envs import atari, gymnasium_env

    if not gymnasium_env.is_gymnasium(FLAGS.env):
        return None
    import jax

    from jaxrl_dist.sebulba import training as host_training

    values = {name: FLAGS[name].value for name in HOST_FLAGS if FLAGS[name].value is not None}
    if values.get("ray_actors"):
        for name in THREAD_FLAGS:
            if name in values:
                raise errors.ConfigError(
                    f"--{name} applies to actor threads; with --ray_actors={values['ray_actors']}"
                    " each Ray actor process steps --envs_per_thread envs"
                )
    elif "ray_address" in values:
        raise errors.ConfigError("--ray_address applies only with --ray_actors=N (N > 0)")
    if values.get("terminal_on_life_loss") and not atari.is_atari(
            gymnasium_env.gymnasium_id(FLAGS.env)):
        raise errors.ConfigError(
            "--terminal_on_life_loss applies only to Atari games (--env=gymnasium:ALE/"
            f"<Game>-v5 or envpool:<Game>-v5), got --env={FLAGS.env}"
        )
    for name in ("actor_devices", "learner_devices"):
        if name in values:
            values[name] = _device_ids(name)
    # Device indices are each process's own (every process runs the same layout).
    return host_training.HostSettings(**values).resolve(jax.local_device_count())


def import_env_modules() -> None:
    """Imports ``--env_module``'s modules. A Gymnasium id one of them registered becomes
    ``gymnasium:<module>:<id>`` (said in one line), so that actor processes import it too.

    Raises:
      ConfigError: a module that cannot be imported.
    """
    import importlib

    from jaxrl_dist.envs import gymnasium_env

    for module in FLAGS.env_module or ():
        import gymnasium

        before = set(gymnasium.registry)
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any failure to import is bad input
            raise errors.ConfigError(
                f"--env_module={module} cannot be imported ({type(e).__name__}: {e})"
            ) from None
        env_id = gymnasium_env.gymnasium_id(FLAGS.env)
        if gymnasium_env.is_gymnasium(FLAGS.env) and env_id in set(gymnasium.registry) - before:
            FLAGS.env = f"{gymnasium_env.PREFIX}{module}:{env_id}"
            print(f"--env_module={module} registers {env_id}: the run uses --env={FLAGS.env}",
                  flush=True)


def config_from_flags():
    """The validated config of ``--agent`` from flags over the env's defaults.

    With ``--env=gymnasium:<id>`` (host actors) ``num_envs`` comes from the actor
    layout; use ``host_settings_from_flags`` for the layout itself. The rules the
    Python API shares live in ``agents`` (``check_env_and_agent``, ``checked_config``,
    ``check_on_device``, ``check_host``, ``check_host_only``, ``check_host_seeds``)
    and in the configs' ``validate``.

    Raises:
      ConfigError: any bad value, or a flag that does not apply to the agent or
        to the acting path.
    """
    from jaxrl_dist import parallel
    from jaxrl_dist.envs import gymnasium_env

    import_env_modules()
    obs_shape = agents.check_env_and_agent(FLAGS.agent, FLAGS.env)
    check_positive(num_seeds=FLAGS.num_seeds, num_devices=FLAGS.num_devices)
    if not -(2**31) <= FLAGS.seed < 2**31:  # jax.random.key takes a 32-bit seed
        raise errors.ConfigError(
            f"--seed must be in [{-(2**31)}, {2**31 - 1}], got {FLAGS.seed}"
        )
    host = gymnasium_env.is_gymnasium(FLAGS.env)
    if host:
        for name in ("num_envs", "policy_lag", "num_devices"):
            if FLAGS[name].value is not None:
                raise errors.ConfigError(
                    f"--{name} does not apply to host actors (--env={FLAGS.env}); "
                    + HOST_INSTEAD[name]
                )
        if FLAGS["chunk_compile"].present:
            raise errors.ConfigError(
                f"--chunk_compile does not apply to host actors (--env={FLAGS.env}); it "
                "picks how the on-device training chunk compiles"
            )
        agents.check_host_seeds(FLAGS.env, FLAGS.num_seeds)
        agents.check_host(FLAGS.agent, FLAGS.ray_actors, bool(FLAGS.deterministic))
    else:
        agents.check_host_only(
            FLAGS.env, [name for name in HOST_FLAGS if FLAGS[name].value is not None]
        )
        agents.check_on_device(FLAGS.agent)
    config = agents.checked_config(FLAGS.agent, FLAGS.env, config_overrides(), obs_shape)
    import jax

    if host:
        from jaxrl_dist.sebulba import training as host_training

        layout = host_settings_from_flags()
        return host_training.host_config(config, layout, jax.process_count()).validate(
            len(layout.learner_devices) * jax.process_count()
        )
    if jax.process_count() > 1 and FLAGS.num_devices not in (None, jax.device_count()):
        raise errors.ConfigError(
            f"--num_devices must be unset in a multi-process run (the mesh spans all "
            f"{jax.device_count()} devices of {jax.process_count()} processes), "
            f"got {FLAGS.num_devices}"
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
