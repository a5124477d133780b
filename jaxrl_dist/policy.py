"""Trained policies: a finished run's final parameters, ready to act.

``load_policy(workdir)`` rebuilds the agent's networks from ``<workdir>/config.json``
(what ``experiments/train.py``, ``training.train`` and ``host_training.train_host``
write), loads the final parameters from ``<workdir>/checkpoint/`` and returns a
``Policy`` with two jitted functions, for any agent and either acting path::

    from jaxrl_dist import policy as policy_lib

    pi = policy_lib.load_policy("runs/cartpole")        # seed 0 of the run
    action = pi.greedy(obs)                             # int32 [B] for obs [B, 4]
    action = pi.act(obs, jax.random.key(0))             # a draw from the policy
    pi.spec.obs_shape, pi.spec.action_space, pi.config.agent

An on-device run with ``--num_seeds=S`` saved ``S`` sets of parameters (a leading seed
axis); ``seed_index`` picks one. A host-actor run (``--env=gymnasium:<id>``) saved one.
"""

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist import agents, errors
from jaxrl_dist.nn import distributions
from jaxrl_dist.run import checkpoint, config_file, files


class PolicySpec(NamedTuple):
    """The environment a policy acts in.

    ``env``: the run's ``--env`` (a gymnax id, or ``gymnasium:<id>``); ``obs_shape``:
    one observation's shape; ``action_space``: the gymnax or Gymnasium space;
    ``action_dim``: the number of actions (Discrete) or the action size (Box);
    ``discrete``: whether actions are indices; ``max_episode_steps``: the env's time
    limit (``None``: a Gymnasium env without one).
    """

    env: str
    obs_shape: tuple[int, ...]
    action_space: Any
    action_dim: int
    discrete: bool
    max_episode_steps: int | None


class Policy(NamedTuple):
    """One seed's trained policy (``load_policy``).

    ``act(obs, key) -> action``: jitted; a draw from the policy the agent acts with
    (PPO, IMPALA, A2C, A3C: a sample of its action distribution; Ape-X: ε-greedy with
    ``epsilon``). ``greedy(obs) -> action``: jitted; the distribution's mode (argmax of
    the logits, the Gaussian mean; Ape-X: argmax Q), what the runs' evaluation uses.

    ``obs``: float32, or uint8 pixels (other dtypes become float32),
    ``[*batch, *spec.obs_shape]`` with any batch shape, ``[]`` included; ``key``: a
    ``jax.random.key`` (or a raw ``uint32[2]`` key). ``action``: int32 ``[*batch]``
    (Discrete) or float32 ``[*batch, action_dim]``
    clipped to the Box's bounds (Box). An ``obs`` whose trailing shape is not
    ``spec.obs_shape`` raises ``ValueError`` when traced.

    ``spec``: ``PolicySpec``; ``config``: the agent's config dataclass, as trained
    (``agents.default_config`` with config.json's fields); ``params``: the parameters
    act and greedy use (one seed's, on the default device); ``seed_index`` of
    ``num_seeds``: which of the run's seeds; ``epsilon``: Ape-X's ε of ``act``
    (``None`` for the other agents); ``workdir``: where it was loaded from.
    """

    act: Callable[[Any, jax.Array], jax.Array]
    greedy: Callable[[Any], jax.Array]
    spec: PolicySpec
    config: Any
    params: Any
    seed_index: int
    num_seeds: int
    epsilon: float | None
    workdir: str


def load_policy(workdir: str, seed: int = 0) -> Policy:
    """The trained policy of the run in ``workdir`` (its seed ``seed``).

    Args:
      workdir: a finished run's directory: ``config.json`` and ``checkpoint/``.
      seed: which of an on-device run's ``--num_seeds`` vmapped seeds (0-based; not the
        run's ``--seed``); 0 for a host-actor run (one set of parameters). evaluate.py's
        ``--seed_index``.

    Returns:
      a ``Policy`` (nothing is compiled until ``act`` or ``greedy`` is first called).

    Raises:
      ConfigError: one line naming the path or argument: ``workdir`` is missing or
        holds no ``config.json`` or ``checkpoint/``, either is damaged or does not
        match the other, the parameters in ``checkpoint/`` are not those whose
        ``params_sha256`` the run recorded in ``metrics.jsonl`` (a finished run's last
        summary; a run without one is not checked), or ``seed`` is not one of the run's
        seeds.
    """
    record = config_file.read(workdir)
    directory = os.path.join(workdir, "checkpoint")
    if not os.path.isdir(directory):
        raise errors.ConfigError(
            f"--workdir={workdir} holds no final parameters ({directory} is missing: the "
            "run has not finished, or stopped before its first update)"
        )
    config = config_file.config_from_record(record, os.path.join(workdir, config_file.NAME))
    spec = env_spec(config.env)
    agent = agents.make_agent(config, spec, 1)
    seed_index = seed
    params, num_seeds = _load_params(directory, agent, seed_index)
    epsilon = apex_epsilon(config) if config.agent == "apex" else None
    act, greedy = _acting_functions(agent, spec, epsilon)
    params = jax.device_put(params)
    return Policy(
        act=functools.partial(act, params), greedy=functools.partial(greedy, params),
        spec=spec, config=config, params=params, seed_index=seed_index,
        num_seeds=num_seeds, epsilon=epsilon, workdir=workdir,
    )


def env_spec(env: str) -> PolicySpec:
    """The ``PolicySpec`` of ``env`` (a gymnax id or ``gymnasium:<id>``; builds one env).

    Raises:
      ConfigError: the env is unknown or cannot be built.
    """
    from jaxrl_dist.envs import gymnasium_env

    if gymnasium_env.is_gymnasium(env):
        spec = gymnasium_env.make_spec(env)
        return PolicySpec(env, spec.obs_shape, spec.action_space, spec.action_dim,
                          spec.discrete, spec.max_episode_steps)
    from jaxrl_dist.envs import gymnax_env

    one = gymnax_env.GymnaxEnv(env, 1)
    return PolicySpec(env, one.obs_shape, one.action_space, one.action_dim, one.discrete,
                      one.max_episode_steps)


def apex_epsilon(config) -> float:
    """Ape-X's sampling ε: that of the greediest actor of its ladder,
    ``epsilon^(1 + epsilon_alpha)`` (``apex.learner.epsilons`` of the last actor)."""
    return float(config.epsilon ** (1.0 + config.epsilon_alpha))


def _check_digest(directory: str, loaded: Any) -> None:
    """Raises ``ConfigError`` unless the parameters loaded from ``directory`` have the
    SHA-256 that the run recorded in its ``metrics.jsonl`` summary (``params_sha256``);
    a run with no recorded digest is not checked."""
    workdir = os.path.dirname(directory)
    recorded = files.recorded_params_sha256(workdir)
    if recorded is None:
        return
    found = checkpoint.params_sha256(loaded)
    if found != recorded:
        raise errors.ConfigError(
            f"{directory} does not hold the run's final parameters: their SHA-256 is "
            f"{found[:16]}..., {os.path.join(workdir, 'metrics.jsonl')} records "
            f"{recorded[:16]}... (the checkpoint changed after the run; train it again)"
        )


def _load_params(directory: str, agent, seed_index: int) -> tuple[Any, int]:
    """``(params of seed seed_index, number of seeds)`` from the checkpoint in
    ``directory``, checked against the parameters ``agent`` makes (ConfigError)."""
    try:
        loaded = checkpoint.load_params(directory)
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds for a damaged directory
        text = " ".join(str(e).split())[:160]
        raise errors.ConfigError(
            f"{directory} cannot be read ({type(e).__name__}: {text})"
        ) from None
    _check_digest(directory, loaded)
    expected = jax.eval_shape(agent.init_params, jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(expected)
    want = {jax.tree_util.keystr(p): x for p, x in paths}
    got = {jax.tree_util.keystr(p): np.asarray(x)
           for p, x in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    mismatch = errors.ConfigError(
        f"{directory} does not hold the parameters of config.json's "
        f"--agent={agent.config.agent} on --env={agent.config.env} "
        f"(expected {_shapes(want)}, found {_shapes(got)})"
    )
    if got.keys() != want.keys():
        raise mismatch
    if all(got[k].shape == want[k].shape for k in want):
        num_seeds = None  # a host-actor run: one set, no seed axis
    elif all(got[k].shape[1:] == want[k].shape and got[k].ndim == len(want[k].shape) + 1
             for k in want) and len({got[k].shape[0] for k in want}) == 1:
        num_seeds = next(iter(got.values())).shape[0]  # on device: [num_seeds, ...]
    else:
        raise mismatch
    count = num_seeds or 1
    if isinstance(seed_index, bool) or not isinstance(seed_index, (int, np.integer)) or not (
            0 <= seed_index < count):
        raise errors.ConfigError(
            f"--seed_index={seed_index} is out of range: the run in "
            f"{os.path.dirname(directory)} has {count} seed(s) (0 to {count - 1})"
        )
    leaves = [got[k] if num_seeds is None else got[k][seed_index] for k in want]
    leaves = [leaf.astype(want[k].dtype) for leaf, k in zip(leaves, want, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves), count


def _shapes(leaves: dict[str, Any]) -> str:
    text = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in sorted(leaves.items()))
    return text if len(text) <= 200 else text[:200] + "..."


def _acting_functions(agent, spec: PolicySpec, epsilon: float | None):
    """Jitted ``act(params, obs, key)`` and ``greedy(params, obs)`` (see ``Policy``)."""
    bounds = None if spec.discrete else (
        np.asarray(spec.action_space.low, np.float32),
        np.asarray(spec.action_space.high, np.float32),
    )

    def batch_shape(obs: jax.Array) -> tuple[int, ...]:
        n = obs.ndim - len(spec.obs_shape)
        if n < 0 or tuple(obs.shape[n:]) != tuple(spec.obs_shape):
            raise ValueError(
                f"obs must be [*batch, {', '.join(map(str, spec.obs_shape))}] for "
                f"{spec.env}, got shape {tuple(obs.shape)}"
            )
        return tuple(obs.shape[:n])

    def finish(action: jax.Array) -> jax.Array:
        if bounds is None:
            return action.astype(jnp.int32)
        return jnp.clip(action.astype(jnp.float32), *bounds)

    def greedy(params, obs):
        obs = _as_obs(obs)
        batch_shape(obs)
        return finish(agent.dist.mode(agent.policy(params, obs)))

    def act(params, obs, key):
        obs = _as_obs(obs)
        shape = batch_shape(obs)
        dist, dist_params = agent.dist, agent.policy(params, obs)
        if epsilon is not None:  # Ape-X: policy() gives Q-values
            dist = distributions.EpsilonGreedy
            dist_params = distributions.EpsGreedyParams(
                dist_params, jnp.full(shape, epsilon, jnp.float32))
        noise = dist.noise(key, shape, spec.action_dim)
        return finish(dist.sample_from_noise(dist_params, noise))

    return jax.jit(act), jax.jit(greedy)


def _as_obs(obs) -> jax.Array:
    """``obs`` as the network takes it: uint8 pixels stay uint8 (scaled inside the
    network), any other dtype becomes float32."""
    obs = jnp.asarray(obs)
    return obs if obs.dtype == jnp.uint8 else obs.astype(jnp.float32)
