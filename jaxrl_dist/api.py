"""The Python API: ``make_config`` and ``train`` for either acting path.

For notebooks and scripts: nothing here parses flags or exits the process; bad input
raises ``errors.ConfigError`` (one line naming the argument), as the command line
refuses it. ``train`` picks the acting path from the env: a gymnax id (or a gymnax
``Environment`` object) acts on device, ``gymnasium:<id>`` (or a Gymnasium env
factory) with host actors (threads, or Ray actor processes with ``ray_actors=N``).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxrl_dist import agents, errors
from jaxrl_dist.run.progress import ProgressFn

FACTORY_NAMESPACE = "jaxrl_dist"  # Gymnasium ids of env factories: jaxrl_dist/<name>-v0


class TrainResult(NamedTuple):
    """What ``train`` returns.

    ``params``: the final parameters (numpy pytree; on device with a leading seed axis
    ``[num_seeds, ...]``, with host actors without one). ``history``: the metrics
    records (one dict per log point, as metrics.jsonl). ``workdir``: where the run's
    files are (``None``: none were written). ``summary``: the last record (greedy
    ``eval/episode_return``, ``sps``, ``compile_s``, ``params_sha256``, ...).
    """

    params: Any
    history: list[dict[str, Any]]
    workdir: str | None
    summary: dict[str, Any]


def _env_id(env: Any, env_params: Any) -> str:
    """``env`` as an id: a string as it is; a gymnax ``Environment`` registered under its
    class name (with ``env_params``); a Gymnasium env factory registered as
    ``gymnasium:jaxrl_dist/<name>-v0``."""
    from jaxrl_dist.envs import gymnax_env

    if isinstance(env, str):
        if env_params is not None:
            raise errors.ConfigError("env_params applies to a gymnax Environment object")
        return env
    if all(hasattr(env, name) for name in ("step", "reset", "default_params")):
        return gymnax_env.register(type(env).__name__, env, env_params)
    if callable(env):
        import gymnasium

        name = getattr(env, "__name__", type(env).__name__).strip("<>") or "env"
        env_id = f"{FACTORY_NAMESPACE}/{name}-v0"
        gymnasium.register(id=env_id, entry_point=env)
        return f"gymnasium:{env_id}"
    raise errors.ConfigError(
        f"env must be an id, a gymnax Environment or a Gymnasium env factory, got "
        f"{type(env).__name__}"
    )


def make_config(agent: str, env: Any, *, env_params: Any = None, **overrides):
    """The validated config of ``agent`` for ``env``: the per-env defaults with
    ``overrides`` (any field of the agent's config; ``None`` leaves the default).

    Args:
      agent: ``ppo``, ``impala``, ``a2c``, ``a3c`` or ``apex``.
      env: a gymnax id (``"CartPole-v1"``), ``"gymnasium:<id>"`` or
        ``"gymnasium:<module>:<id>"``, a gymnax ``Environment`` object (on device;
        ``env_params``: its ``EnvParams``, default its ``default_params``), or a
        Gymnasium env factory, ``() -> gymnasium.Env`` (host actor threads; for Ray
        actor processes register the env in a module and pass its ``module:id``).
      **overrides: config fields, e.g. ``total_steps=200_000, clip_eps=0.1``.

    Returns:
      The agent's frozen config dataclass (validated for one device; ``train`` checks
      it again for its devices).

    Raises:
      ConfigError: an unknown agent, env or field, a value out of range, or an agent
        that cannot act in the env's action space (one line naming the argument).
    """
    from jaxrl_dist import cli

    env_id = _env_id(env, env_params)
    cli.check_env_and_agent(agent, env_id)
    names = {f.name for f in dataclasses.fields(agents.default_config(agent, env_id))}
    for name in overrides:
        if name not in names:
            raise errors.ConfigError(f"--{name} does not apply to --agent={agent}")
    return agents.default_config(agent, env_id, **overrides).validate(1)


def _split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from jaxrl_dist.run.settings import RunSettings
    from jaxrl_dist.sebulba import training as host_training

    run_names = {f.name for f in dataclasses.fields(RunSettings)}
    host_names = {f.name for f in dataclasses.fields(host_training.HostSettings)}
    unknown = sorted(set(settings) - run_names - host_names)
    if unknown:
        raise errors.ConfigError(
            f"train() got unknown setting(s) {', '.join(unknown)}; run settings: "
            f"{', '.join(sorted(run_names))}; host-actor settings: {', '.join(sorted(host_names))}"
        )
    run = {k: v for k, v in settings.items() if k in run_names}
    return run, {k: v for k, v in settings.items() if k in host_names}


def train(config, *, workdir: str | None = None, progress_fn: ProgressFn | None = None,
          log: Callable[[str], None] = print, **settings) -> TrainResult:
    """Trains ``config`` (from ``make_config``) on the acting path its env selects.

    Args:
      config: an agent's config.
      workdir: where metrics.jsonl, config.json, checkpoints and the plot go (``None``:
        nothing is written).
      progress_fn: ``(env_steps, metrics)`` at every log point (default: a console line
        through ``log`` every 2 s).
      log: receives one-line messages.
      **settings: ``run.settings.RunSettings`` fields (``seed``, ``num_seeds``,
        ``eval_episodes``, ``checkpoint_every``, ``resume``, ...) and, for host actors,
        ``host_training.HostSettings`` fields (``actor_threads``, ``envs_per_thread``,
        ``deterministic``, ``ray_actors``, ...).

    Returns:
      A ``TrainResult``.

    Raises:
      ConfigError: bad settings (before anything compiles or is written).
      NonFiniteError, ActorError, KeyboardInterrupt: as the command line's run stops
        (what finished is kept in ``workdir``).
    """
    from jaxrl_dist.anakin import training
    from jaxrl_dist.envs import gymnasium_env
    from jaxrl_dist.run.settings import RunSettings
    from jaxrl_dist.sebulba import training as host_training

    run, host = _split_settings(settings)
    if not gymnasium_env.is_gymnasium(config.env):
        if host:
            raise errors.ConfigError(
                f"{', '.join(sorted(host))} apply only to host actors (env gymnasium:<id>)"
            )
        summary = training.train(config, RunSettings(**run), workdir, log, progress_fn)
    else:
        layout = host_training.HostSettings(**host)
        if layout.ray_actors and gymnasium_env.gymnasium_id(config.env).startswith(
                f"{FACTORY_NAMESPACE}/"):
            raise errors.ConfigError(
                "ray_actors: an env factory registered in this process does not reach Ray "
                "actor processes; register the env in a module and use gymnasium:<module>:<id>"
            )
        summary = host_training.train_host(config, RunSettings(**run), layout, workdir, log,
                                           progress_fn)
    last = {k: v for k, v in summary.items()
            if k not in ("params", "history", "state", "eval/returns")}
    return TrainResult(summary["params"], summary["history"], workdir, last)
