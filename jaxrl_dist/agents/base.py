"""What every agent shares, independent of where its data comes from.

An ``Agent`` holds one config's networks, action distribution and optimizer and
the pure functions built from them: ``init_params``, ``init_agent_state``,
``act`` (one batched acting step), ``learn`` (one learning step on a
trajectory, inside ``shard_map``), Ape-X's actor-side ``actor_batch``, and the
hooks by which an acting path composes them (``update_keys``, ``acting_params``,
``next_agent_state``). ``functions()`` hands the ones an acting path needs over as
an ``AgentFunctions``. Nothing here steps an environment or knows a mesh beyond
its size: ``anakin/on_device.py`` composes one generic update with gymnax envs,
``sebulba/learner.py`` takes batches from host actors.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxrl_dist import tuning, types
from jaxrl_dist.agents import common
from jaxrl_dist.nn import distributions, networks


class AgentFunctions(NamedTuple):
    """An agent's pure functions, as an acting path uses them.

    ``init``: ``key -> (params, opt_state, agent_state)`` for one run (no seed axis).
    ``act``: jitted ``(params, obs [B, ...], key, env_ids [B]) -> (action, log_prob,
    dist_params, next_key)``, one acting step.
    ``learn``: ``(params, opt_state, agent_state, batch, key, env_ids) -> (params,
    opt_state, agent_state, metrics)``, inside ``shard_map`` over the data axis.
    ``actor_step``: ``(params, traj [T, B, ...], env_ids [B]) -> batch`` run by the
    actor before sending (Ape-X: n-step transitions and priorities), or ``None``
    to send the ``Transition`` itself.
    ``agent_state_specs``: ``PartitionSpec`` prefix of ``agent_state`` (no seed axis).
    ``policy``, ``mode``: ``(params, obs) -> dist_params`` and ``dist_params -> greedy
    action``, for evaluation.
    """

    init: Callable
    act: Callable
    learn: Callable
    actor_step: Callable | None
    agent_state_specs: Any
    policy: Callable
    mode: Callable


# Where non-finite values can appear in an update, in the order data flows through it.
NONFINITE_PLACES = ("observations", "rewards", "loss", "gradients", "parameters")
# Every ``learn`` returns one float32 flag metric per place, ``NONFINITE_FLAG + place``:
# NaN where that place held a NaN/inf in the update, else 0 (not logged: a NaN flag
# trips the finite guards, which name the first place; see ``first_nonfinite_place``).
# Of several gradient steps only the first with a non-finite value is flagged, and an
# update that starts from non-finite parameters flags ``parameters`` alone (what
# follows is their consequence), so the first flagged place is where it began.
NONFINITE_FLAG = "guard/nonfinite/"
NONFINITE_FLAGS = tuple(NONFINITE_FLAG + place for place in NONFINITE_PLACES)


def all_finite(*trees) -> jax.Array:
    """``bool[]``: every floating-point element of ``trees`` is finite (one reduction per
    leaf; integer and bool leaves are finite)."""
    leaves = [x for tree in trees for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def nonfinite_flags(**finite: jax.Array) -> dict[str, jax.Array]:
    """``{NONFINITE_FLAG + place: float32 NaN where not finite[place], else 0}`` for the
    places named (``bool[]`` values from ``all_finite``)."""
    return {NONFINITE_FLAG + place: jnp.where(ok, 0.0, jnp.nan).astype(jnp.float32)
            for place, ok in finite.items()}


def first_step_flags(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Removes the flag metrics of stacked gradient steps (``[...]``, steps in order along
    the flattened leading axes) from ``metrics``; returns those of the first step with a
    NaN flag (the first step's, all 0, when none has)."""
    flags = {k: metrics.pop(k).reshape(-1) for k in NONFINITE_FLAGS if k in metrics}
    bad = jnp.stack([jnp.isnan(v) for v in flags.values()]).any(axis=0)
    first = jnp.argmax(bad)
    return {k: v[first] for k, v in flags.items()}


def update_flags(params_finite: jax.Array, flags: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """All ``NONFINITE_FLAGS`` of an update from ``flags`` (missing ones 0) and whether the
    parameters it started from were finite (if not, only ``parameters`` is flagged)."""
    params_flag = NONFINITE_FLAG + "parameters"
    zero = jnp.zeros((), jnp.float32)
    return {
        k: jnp.where(params_finite, flags.get(k, zero),
                     jnp.nan if k == params_flag else 0.0).astype(jnp.float32)
        for k in NONFINITE_FLAGS
    }


def is_nonfinite_flag(name: str) -> bool:
    """Whether metric ``name`` is one of ``NONFINITE_FLAGS`` (kept out of logged records)."""
    return name.startswith(NONFINITE_FLAG)


def first_nonfinite_place(metrics: dict[str, Any]) -> str | None:
    """The first of ``NONFINITE_PLACES`` whose flag in ``metrics`` (host values of one
    update, or of a chunk averaged over its updates) is non-finite, or ``None``."""
    for place in NONFINITE_PLACES:
        value = metrics.get(NONFINITE_FLAG + place)
        if value is not None and not np.all(np.isfinite(np.asarray(value))):
            return place
    return None


class Agent:
    """Networks, distribution, optimizer and update rule of one agent's config.

    Args:
      config: an ``OnDeviceConfig`` subclass (validated here for ``num_devices``).
      spec: the environment's ``envs.spec.EnvSpec`` (or anything with its fields).
      num_devices: ``D``, devices of the learner mesh (``num_envs`` splits across them).
      tuning_: how programs are built for the devices (``tuning.for_mesh``; default:
        ``jax.default_backend()``'s).

    Raises:
      ConfigError: the config does not fit ``num_devices`` or the env's observations.
    """

    def __init__(self, config: common.OnDeviceConfig, spec: Any, num_devices: int = 1,
                 tuning_: tuning.Tuning | None = None):
        self.config = config.validate(num_devices)
        self.spec = spec
        self.num_devices = num_devices
        self.local_envs = config.num_envs // num_devices
        self.tuning = tuning_ or tuning.for_default_backend()
        self.dist = distributions.for_action_space(spec.action_space)
        common.check_torso_fits(config.torso, spec.obs_shape, config.env)
        # A pixel torso is shared by the policy and value heads (``networks.ActorCritic``).
        self.shared_torso = config.torso in common.PIXEL_TORSOS
        self._build_networks(len(spec.obs_shape))
        # The update rule acts on ONE flat vector of all parameters: every parameter
        # leaf would otherwise cost its own few small kernels per step.
        self.flat_optimizer = self._make_optimizer()
        self.optimizer = optax.flatten(self.flat_optimizer)
        self.acting = types.ActingFunctions(
            self.policy, self.dist.noise, self.dist.sample_from_noise, self.dist.log_prob,
            spec.action_dim,
        )

    # ----------------------------------------- how an acting path composes an update
    def update_keys(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(rollout_key, learn_key)`` of one on-device update's ``key`` (default: split)."""
        rollout_key, learn_key = jax.random.split(key)
        return rollout_key, learn_key

    def acting_params(self, params: types.Params, agent_state: Any, env_ids: jax.Array):
        """What on-device actors act with (``acting``'s first argument) for one update:
        default the learner's current ``params`` (``env_ids`` ``[B_local]``: unused)."""
        del agent_state, env_ids
        return params

    def next_agent_state(self, params: types.Params, agent_state: Any, learned: Any) -> Any:
        """The agent's own state after an update: ``learned`` (what ``learn`` returned)
        by default; ``params`` and ``agent_state`` are the update's starting point."""
        del params, agent_state
        return learned

    def learn(self, params, opt_state, agent_state, traj: types.Transition, key, env_ids):
        """The learning half of an update, on a trajectory from any actor.

        Runs inside ``shard_map`` over the data axis (gradients averaged with
        ``pmean``), for one seed.

        Args:
          params, opt_state, agent_state: the learner's state before the update.
          traj: ``Transition`` ``[T, B_local, ...]`` of this device's environments.
          key: PRNG key of this update (the same on every device).
          env_ids: ``[B_local]`` int32 global indices of the trajectory's environments.

        Returns:
          ``(params, opt_state, agent_state, metrics)``; metrics are scalars, already
          averaged over the mesh, among them the update's ``NONFINITE_FLAGS``.
        """
        raise NotImplementedError

    def _build_networks(self, obs_ndim: int) -> None:
        """Creates the agent's flax modules (default: separate policy and value networks;
        one ``networks.ActorCritic`` with a pixel torso) and ``policy_key``, the entry
        of ``params`` that the policy reads."""
        config, dot_general = self.config, self.tuning.dot_general
        conv = self.tuning.conv_general_dilated
        if self.shared_torso:
            self.policy_key = "actor_critic"
            self.actor_critic_net = networks.ActorCritic(
                config.hidden_sizes, self.spec.action_dim, self.dist.discrete,
                config.activation, config.torso, dot_general, conv,
            )
            return
        self.policy_key = "policy"
        self.policy_net = networks.PolicyNetwork(
            config.hidden_sizes, self.spec.action_dim, self.dist.discrete, config.activation,
            obs_ndim=obs_ndim, torso=config.torso, dot_general=dot_general,
            conv_general_dilated=conv,
        )
        self.value_net = networks.ValueNetwork(
            config.hidden_sizes, config.activation, obs_ndim, torso=config.torso,
            dot_general=dot_general, conv_general_dilated=conv,
        )

    def agent_state_specs(self, seed_axis: bool) -> Any:
        """``PartitionSpec`` (or a pytree prefix of them) of ``agent_state`` over the mesh.

        Default ``P()``: replicated. ``seed_axis``: the on-device state has a leading
        seed axis (the host learner's has none). Ape-X shards its replay here.
        """
        del seed_axis
        return P()

    def act(self, params, obs: jax.Array, key: jax.Array, env_ids: jax.Array):
        """One acting step: ``(action, log_prob, dist_params, next_key)`` for ``obs``
        ``[B, ...]``, sampling from the policy (``env_ids`` ``[B]``: unused here)."""
        del env_ids
        key, noise_key = jax.random.split(key)
        dist_params = self.policy(params, obs)
        noise = self.dist.noise(noise_key, obs.shape[:1], self.spec.action_dim)
        action = self.dist.sample_from_noise(dist_params, noise)
        return action, self.dist.log_prob(dist_params, action), dist_params, key

    # ``(params, traj [T, B, ...], env_ids [B]) -> batch`` run on the actor before
    # sending (Ape-X: n-step transitions and priorities), or None to send the raw
    # ``Transition``.
    actor_batch: Callable | None = None

    def init_agent_state(self, params: types.Params) -> Any:
        """The agent's own initial state for one seed (default: none)."""
        del params
        return ()

    def optimizer_steps(self) -> int:
        """Optimizer steps over the whole run (the horizon of learning-rate annealing)."""
        return self.config.num_updates

    # ---------------------------------------------------------------- pieces
    def functions(self) -> AgentFunctions:
        """This agent's ``AgentFunctions`` (``act`` jitted; the rest traced by the caller)."""
        return AgentFunctions(
            init=self.init, act=jax.jit(self.act), learn=self.learn,
            actor_step=self.actor_batch, agent_state_specs=self.agent_state_specs(False),
            policy=self.policy, mode=self.dist.mode,
        )

    def init(self, key: jax.Array):
        """``(params, opt_state, agent_state)`` of a fresh run from ``key``."""
        params = self.init_params(key)
        return params, self.optimizer.init(params), self.init_agent_state(params)

    def _make_optimizer(self) -> optax.GradientTransformation:
        cfg = self.config
        lr = cfg.lr
        if cfg.anneal_lr:
            lr = optax.linear_schedule(cfg.lr, 0.0, self.optimizer_steps())
        if cfg.optimizer == "adam":
            opt = optax.adam(lr, eps=cfg.opt_eps)
        else:
            opt = optax.rmsprop(lr, decay=0.99, eps=cfg.opt_eps)
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), opt)

    def _actor_critic(self, params: types.Params, method: str, *obs: jax.Array):
        return self.actor_critic_net.apply(params["actor_critic"], *obs, method=method)

    def policy(self, params: types.Params, obs: jax.Array) -> Any:
        """Distribution parameters of π(·|obs) for ``obs`` ``[..., *obs_shape]``."""
        if self.shared_torso:
            return self._actor_critic(params, "policy", obs)
        return self.policy_net.apply(params["policy"], obs)

    def value(self, params: types.Params, obs: jax.Array) -> jax.Array:
        """V(obs), ``[...]`` float32."""
        if self.shared_torso:
            return self._actor_critic(params, "value", obs)
        return self.value_net.apply(params["value"], obs)

    def policy_and_value(self, params: types.Params, obs: jax.Array) -> tuple[Any, jax.Array]:
        """``(policy(params, obs), value(params, obs))``; a shared torso runs once."""
        if self.shared_torso:
            return self._actor_critic(params, "policy_and_value", obs)
        return self.policy(params, obs), self.value(params, obs)

    def values_and_next_values(self, params, traj: types.Transition):
        """``V(x_t)`` and ``V(x'_{t+1})`` (the true, pre-reset successor) in one batched call."""
        all_values = self.value(params, jnp.concatenate([traj.obs, traj.next_obs], axis=0))
        return jnp.split(all_values, 2, axis=0)

    def policy_and_values(self, params, traj: types.Transition):
        """``(π(·|x_t), V(x_t), V(x'_{t+1}))`` on ``traj`` ``[T, B, ...]``; a shared torso
        runs once over ``x_t`` and ``x'_{t+1}`` together."""
        if self.shared_torso:
            return self._actor_critic(params, "policy_and_values", traj.obs, traj.next_obs)
        values, next_values = self.values_and_next_values(params, traj)
        return self.policy(params, traj.obs), values, next_values

    def discounts(self, traj: types.Transition) -> jax.Array:
        """``γ_t = γ·(1 − terminated_t)``: termination stops bootstrapping, truncation does not."""
        return self.config.gamma * (1.0 - traj.terminated.astype(jnp.float32))

    def rewards(self, traj: types.Transition) -> jax.Array:
        """``r_t`` as the loss uses it: clipped to ``[-c, c]`` with ``reward_clip = c > 0``
        (Mnih et al. 2015, Methods; Espeholt et al. 2018, Sec. 5.3), else as stepped."""
        c = self.config.reward_clip
        return jnp.clip(traj.reward, -c, c) if c > 0 else traj.reward

    def init_params(self, key: jax.Array) -> types.Params:
        """Fresh ``{"policy", "value"}`` parameters for one seed (``{"actor_critic"}``
        with a shared pixel torso)."""
        policy_key, value_key, _ = jax.random.split(key, 3)
        dummy_obs = jnp.zeros(self.spec.obs_shape, jnp.float32)
        if self.shared_torso:
            return {"actor_critic": self.actor_critic_net.init(policy_key, dummy_obs)}
        return {
            "policy": self.policy_net.init(policy_key, dummy_obs),
            "value": self.value_net.init(value_key, dummy_obs),
        }
