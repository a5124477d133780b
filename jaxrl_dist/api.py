"""The Python API: ``make_config`` and ``train`` for either acting path.

For notebooks and scripts: nothing here parses flags or exits the process; bad input
raises ``errors.ConfigError`` (one line naming the argument), as the command line
refuses it. ``train`` picks the acting path from the env: a gymnax id (or a gymnax
``Environment`` object) acts on device, ``gymnasium:<id>`` (or a Gymnasium env
factory) with host actors (threads, or Ray actor processes with ``ray_actors=N``).
``check`` makes ``train``'s first checks alone (``experiments/train.py`` calls it
before it touches the workdir); the rules themselves live in ``agents`` (agent, env
and acting path), the configs' ``validate`` and ``run`` (settings, config.json).
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxrl_dist import agents, errors
from jaxrl_dist.run.progress import ProgressFn

FACTORY_NAMESPACE = "jaxrl_dist"  # Gymnasium ids of env factories: jaxrl_dist/<name>-v0
ALREADY_HOLDS_A_RUN = (
    "--workdir={workdir} already holds a run (metrics.jsonl records or checkpoints); "
    "choose a new --workdir, pass --overwrite, or --resume it"
)


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
      ConfigError: an unknown agent, env or field, a value out of range, an agent
        that cannot act in the env's action space, or a torso that cannot take its
        observations (one line naming the argument, as the command line says it:
        ``agents.checked_config``, the config's ``validate``).
    """
    env_id = _env_id(env, env_params)
    return agents.checked_config(agent, env_id, overrides).validate(1)


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


class _Checked(NamedTuple):
    """``check``'s result: the run's settings and, for host actors, their layout."""

    run: Any  # RunSettings
    host: Any  # host_training.HostSettings, or None on device


def _check(config, workdir: str | None, settings: dict[str, Any]) -> _Checked:
    from jaxrl_dist.envs import gymnasium_env
    from jaxrl_dist.run import config_file, files
    from jaxrl_dist.run.settings import RunSettings
    from jaxrl_dist.sebulba import training as host_training

    run, host = _split_settings(settings)
    run = RunSettings(**run).check()
    if not gymnasium_env.is_gymnasium(config.env):
        agents.check_host_only(config.env, sorted(host))
        layout, runs_as = None, config
    else:
        agents.check_host_seeds(config.env, run.num_seeds)
        layout, runs_as = host_training.HostSettings(**host), config
        if layout.ray_actors and gymnasium_env.gymnasium_id(config.env).startswith(
                f"{FACTORY_NAMESPACE}/"):
            raise errors.ConfigError(
                "ray_actors: an env factory registered in this process does not reach Ray "
                "actor processes; register the env in a module and use gymnasium:<module>:<id>"
            )
        if run.resume and workdir:
            import jax

            # The config as the host path runs it (num_envs from the layout), as written.
            runs_as = host_training.host_config(
                config, layout.resolve(jax.local_device_count()), jax.process_count())
    if run.resume and workdir:
        config_file.check_resume(workdir, runs_as, run.seed, run.num_seeds)
    elif workdir and not run.overwrite and files.holds_run(workdir):
        raise errors.ConfigError(ALREADY_HOLDS_A_RUN.format(workdir=workdir))
    return _Checked(run, layout)


def _prepare_workdir(workdir: str | None, run, log: Callable[[str], None]) -> None:
    """Removes the outputs of the run in ``workdir`` with ``overwrite``, or of a run
    that stopped before its first update (saying so); process 0 alone, the others wait."""
    from jaxrl_dist import distributed
    from jaxrl_dist.run import files

    if not workdir or run.resume or not os.path.isdir(workdir):
        return
    if distributed.is_primary() and files.has_outputs(workdir):
        if not run.overwrite:  # _check refused a run that got somewhere
            log(f"reusing --workdir={workdir}: the run there stopped before its first update")
        files.clear_outputs(workdir)
    distributed.sync("workdir cleared")


def check(config, *, workdir: str | None = None, **settings) -> None:
    """The checks ``train`` makes before it builds anything, alone: nothing is built,
    compiled or written (the command line makes them before it touches ``workdir``).

    Args: as ``train``'s.

    Raises:
      ConfigError: an unknown setting, host-actor settings for an on-device env
        (``agents.check_host_only``), a bad run setting (``RunSettings.check``), more
        than one seed with host actors (``agents.check_host_seeds``), or with
        ``resume`` a ``workdir`` that holds no run of this config, seed and
        ``num_seeds`` (``run.config_file.check_resume``).
    """
    _check(config, workdir, settings)


def train(config, *, workdir: str | None = None, progress_fn: ProgressFn | None = None,
          log: Callable[[str], None] = print, **settings) -> TrainResult:
    """Trains ``config`` (from ``make_config``) on the acting path its env selects.

    Args:
      config: an agent's config.
      workdir: where metrics.jsonl, config.json, checkpoints and the plot go (``None``:
        nothing is written).
      progress_fn: ``(env_steps, metrics)`` at every log point (default: a console line
        through ``log`` every 2 s).
      log: receives one-line messages (the first, where ``total_steps`` is not a whole
        number of updates: the env steps the run takes, ``common.rounding_note``).
      **settings: ``run.settings.RunSettings`` fields (``seed``, ``num_seeds``,
        ``eval_episodes``, ``checkpoint_every``, ``resume``, ...) and, for host actors,
        ``host_training.HostSettings`` fields (``actor_threads``, ``envs_per_thread``,
        ``deterministic``, ``ray_actors``, ...).

    Returns:
      A ``TrainResult``.

    Raises:
      ConfigError: bad settings (``check``; then the acting path's own: the agent on
        that path (``agents.check_on_device``, ``agents.check_host``), the layout, the
        memory needed, the checkpoint to resume), before anything compiles or is
        written.
      NonFiniteError, ActorError, KeyboardInterrupt: as the command line's run stops
        (what finished is kept in ``workdir``).
    """
    from jaxrl_dist import distributed
    from jaxrl_dist.agents import common
    from jaxrl_dist.anakin import training
    from jaxrl_dist.sebulba import training as host_training

    run, layout = _check(config, workdir, settings)
    _prepare_workdir(workdir, run, log)
    if (note := common.rounding_note(config)) and distributed.is_primary():
        log(note)
    if layout is None:
        summary = training.train(config, run, workdir, log, progress_fn)
    else:
        summary = host_training.train_host(config, run, layout, workdir, log, progress_fn)
    last = {k: v for k, v in summary.items()
            if k not in ("params", "history", "state", "eval/returns")}
    return TrainResult(summary["params"], summary["history"], workdir, last)
