"""A thin batched adapter over gymnax 1.0 environments, run on device.

gymnax 1.0 ``step`` returns ``(obs, state, reward, terminated, truncated, info)``
and auto-resets; ``info["final_observation"]`` is the observation *before* the
reset. This adapter keeps both flags separate so that learners bootstrap on
truncation (time limit) and not on termination, and tracks episode statistics
on device so that no per-step info has to leave the device.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxrl_dist import errors, tuning
from jaxrl_dist.envs.spec import Step

# gymnax imports plotting modules for its renderers, which training never calls;
# a CPU-only process defers them (cpu.deferred_import).
with tuning.deferred_imports("matplotlib.pyplot", "seaborn"):
    import gymnax


class EpisodeStats(NamedTuple):
    """Running statistics of the episode in progress, per env: ``[B]``."""

    returns: jax.Array  # float32, undiscounted return so far
    lengths: jax.Array  # int32, steps so far


class EnvState(NamedTuple):
    """Batched environment state; every leaf has leading axis ``B``."""

    env_state: Any
    obs: jax.Array  # [B, *obs_shape], the observation to act on
    episode: EpisodeStats


# Environments registered by users (``register``): id -> (environment, default params).
_REGISTERED: dict[str, tuple[Any, Any]] = {}


def register(env_id: str, env: Any, params: Any = None) -> str:
    """Makes a gymnax ``Environment`` object usable as ``--env=env_id`` / ``config.env``
    in this process (gymnax's own registry is a fixed list). Returns ``env_id``.

    Args:
      env_id: the id to use; must not be one of gymnax's own ids.
      env: a ``gymnax.environments.environment.Environment`` instance.
      params: its ``EnvParams`` (default: ``env.default_params``).

    Raises:
      ConfigError: ``env_id`` is a gymnax id, or ``env`` is not a gymnax Environment.
    """
    if env_id in gymnax.registered_envs:
        raise errors.ConfigError(f"--env={env_id} is gymnax's own id; register another one")
    if not all(hasattr(env, name) for name in ("step", "reset", "default_params")):
        raise errors.ConfigError(
            f"--env={env_id}: {type(env).__name__} is not a gymnax Environment"
        )
    _REGISTERED[env_id] = (env, env.default_params if params is None else params)
    return env_id


def make(env_id: str) -> tuple[Any, Any]:
    """``(environment, default params)`` of a registered or gymnax id (``check_env_id``
    first)."""
    if env_id in _REGISTERED:
        return _REGISTERED[env_id]
    return gymnax.make(env_id)


def check_env_id(env_id: str) -> None:
    """Raises ConfigError unless ``env_id`` is a gymnax id or one made with ``register``."""
    if env_id not in gymnax.registered_envs and env_id not in _REGISTERED:
        raise errors.ConfigError(
            f"--env must be a gymnax id ({', '.join(gymnax.registered_envs)}), an id "
            f"registered with jaxrl_dist.register_gymnax_env, or gymnasium:<id>; got "
            f"{env_id!r}"
        )


def _varying_axes(x: jax.Array) -> frozenset:
    """Mesh axes along which ``x`` varies inside ``shard_map`` (empty outside it)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)  # jax < 0.10
    if vma is None:
        manual = getattr(aval, "manual_axis_type", None)
        vma = manual.varying if manual is not None else ()
    return frozenset(vma)


def per_device(fn):
    """``fn`` (gymnax code) run unchanged, also inside ``jax.shard_map``.

    Why: inside ``shard_map`` JAX types every value with the mesh axes it varies
    along (vma) and requires a ``lax.while_loop``/``scan`` carry to keep its type.
    gymnax is not written for that: Asterix-MinAtar's ``while_sample_slots`` starts a
    ``while_loop`` from a constant (``jnp.array([0, 0])``: device-invariant) and
    updates it from the env state (device-varying: environments are split over the
    ``"data"`` axis), so tracing fails ("carry input and carry output must have equal
    types ... manual axis types do not match") before anything runs. The values are
    right; only the type check cannot be satisfied without editing gymnax.

    So, inside ``shard_map``, ``fn`` runs in a nested ``jax.shard_map`` that makes no
    new axis manual (``axis_names=frozenset()``: no data moves, each device runs
    ``fn`` on its own values as before) with ``check_vma=False``, and its outputs are
    then cast to varying along every manual axis (``lax.pcast``): they depend on this
    device's environments, and varying is the type that never claims two devices hold
    the same value. Sound because env code has no collectives and is never
    differentiated (the only things the vma types decide). Outside ``shard_map``
    (evaluation, tests) ``fn`` is called directly.

    Args:
      fn: a function of arrays (pytrees of them) returning a pytree of arrays.

    Returns:
      a function with ``fn``'s signature, values and shapes.
    """

    def wrapped(*args):
        manual = tuple(sorted(jax.sharding.get_abstract_mesh().manual_axes))
        if not manual:
            return fn(*args)
        out = jax.shard_map(
            fn, in_specs=(P(),) * len(args), out_specs=P(), axis_names=frozenset(),
            check_vma=False,
        )(*args)

        def varying(x):
            missing = tuple(a for a in manual if a not in _varying_axes(x))
            return jax.lax.pcast(x, missing, to="varying") if missing else x

        return jax.tree.map(varying, out)

    return wrapped


class GymnaxEnv:
    """``num_envs`` copies of a gymnax environment, reset and stepped with ``vmap``.

    Args:
      env_id: a gymnax id, e.g. ``"CartPole-v1"`` (see ``gymnax.registered_envs``).
      num_envs: batch size ``B`` (> 0).
      env_params: optional gymnax ``EnvParams`` override (e.g. a shorter
        ``max_steps_in_episode``).

    Raises:
      ConfigError: unknown ``env_id``.
    """

    def __init__(self, env_id: str, num_envs: int, env_params: Any = None):
        check_env_id(env_id)
        self.env_id = env_id
        self.num_envs = num_envs
        self.env, default_params = make(env_id)
        self.params = default_params if env_params is None else env_params
        self.action_space = self.env.action_space(self.params)
        self.observation_space = self.env.observation_space(self.params)
        self.obs_shape = tuple(self.observation_space.shape)
        self.discrete = type(self.action_space).__name__ == "Discrete"
        self.action_dim = (
            int(self.action_space.n) if self.discrete else int(self.action_space.shape[-1])
        )
        self.max_episode_steps = int(self.params.max_steps_in_episode)

    def reset(self, keys: jax.Array) -> EnvState:
        """Resets ``B`` envs; ``keys`` is ``[B]`` typed PRNG keys."""
        obs, env_state = per_device(
            lambda k: jax.vmap(self.env.reset, in_axes=(0, None))(k, self.params)
        )(keys)
        b = obs.shape[0]
        stats = EpisodeStats(jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32))
        return EnvState(env_state, obs, stats)

    def reset_pool(self, keys: jax.Array) -> tuple[jax.Array, Any]:
        """Fresh ``(obs, env_state)`` for every key (any batch shape), for :meth:`step`.

        Resets do not depend on the trajectory, so a rollout draws all of them in
        one vectorised call before its time loop instead of hashing a key inside
        every step (gymnax's ``step`` computes a reset every step anyway).
        """
        flat = keys.reshape(-1)
        obs, env_state = per_device(
            lambda k: jax.vmap(self.env.reset_env, in_axes=(0, None))(k, self.params)
        )(flat)
        return jax.tree.map(lambda x: x.reshape(keys.shape + x.shape[1:]), (obs, env_state))

    def _step_env(self, keys, env_state, action):
        """gymnax's own step (no auto-reset), vmapped: ``(obs, state, reward, terminated,
        truncated)``."""
        next_obs, env_state, reward, terminated, _ = jax.vmap(
            self.env.step_env, in_axes=(0, 0, 0, None)
        )(keys, env_state, action, self.params)
        truncated = jax.vmap(self.env.is_truncated, in_axes=(0, None))(env_state, self.params)
        return next_obs, env_state, reward, terminated, truncated

    def step(
        self,
        state: EnvState,
        action: jax.Array,
        keys: jax.Array,
        reset: tuple[jax.Array, Any],
    ) -> tuple[EnvState, Step]:
        """Steps ``B`` envs, auto-resetting finished ones, as gymnax 1.0 ``Environment.step``.

        Args:
          state: batched ``EnvState``.
          action: ``[B]`` int32 (discrete) or ``[B, A]`` float32 (clipped to the bounds).
          keys: ``[B]`` typed keys for the transition.
          reset: ``(obs [B, ...], env_state)`` from :meth:`reset_pool`, used where an
            episode ends.

        Returns:
          ``(next_state, timestep)``.
        """
        if not self.discrete:
            action = jnp.clip(action, self.action_space.low, self.action_space.high)
        next_obs, env_state, reward, terminated, truncated = per_device(self._step_env)(
            keys, state.env_state, action
        )
        terminated = terminated.astype(bool)
        truncated = jnp.logical_and(truncated.astype(bool), ~terminated)
        done = terminated | truncated
        reset_obs, reset_state = reset

        def select(reset_leaf, step_leaf):
            mask = done.reshape(done.shape + (1,) * (step_leaf.ndim - 1))
            return jnp.where(mask, reset_leaf, step_leaf)

        obs = select(reset_obs, next_obs)
        env_state = jax.tree.map(select, reset_state, env_state)
        reward = reward.astype(jnp.float32)
        returns = state.episode.returns + reward
        lengths = state.episode.lengths + 1
        timestep = Step(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_obs=next_obs,
            episode_return=jnp.where(done, returns, 0.0),
            episode_length=jnp.where(done, lengths, 0),
        )
        stats = EpisodeStats(jnp.where(done, 0.0, returns), jnp.where(done, 0, lengths))
        return EnvState(env_state, obs, stats), timestep
