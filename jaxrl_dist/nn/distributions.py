"""Action distributions as pure functions over their parameters.

Sampling is split into drawing noise (``noise``, done for a whole rollout in one
vectorised call before the time loop) and a deterministic transform
(``sample_from_noise``), so no random-number hashing runs inside ``lax.scan``.

``Categorical`` takes logits ``[..., A]``; ``DiagGaussian`` takes a
``(mean, log_std)`` pair, each ``[..., A]``. Log-probabilities and entropies are
in nats, float32, with the trailing action axis reduced.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = jnp.log(2.0 * jnp.pi)


class GaussianParams(NamedTuple):
    mean: jax.Array
    log_std: jax.Array


class Categorical:
    """Categorical distribution over ``A`` discrete actions, from logits ``[..., A]``."""

    discrete = True

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...], action_dim: int) -> jax.Array:
        """Standard Gumbel noise ``[*shape, A]`` for :meth:`sample_from_noise`."""
        return jax.random.gumbel(key, shape + (action_dim,), jnp.float32)

    @staticmethod
    def sample_from_noise(logits: jax.Array, noise: jax.Array) -> jax.Array:
        """Gumbel-max sampling: ``argmax(logits + noise)`` is a draw from softmax(logits)."""
        return jnp.argmax(logits + noise, axis=-1).astype(jnp.int32)

    @staticmethod
    def mode(logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    @staticmethod
    def log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    @staticmethod
    def entropy(logits: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    @staticmethod
    def kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
        """KL[p || q], exact."""
        log_p = jax.nn.log_softmax(p_logits, axis=-1)
        log_q = jax.nn.log_softmax(q_logits, axis=-1)
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


class DiagGaussian:
    """Diagonal Gaussian over ``A``-dim continuous actions, params ``(mean, log_std)``."""

    discrete = False

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...], action_dim: int) -> jax.Array:
        """Standard normal noise ``[*shape, A]`` for :meth:`sample_from_noise`."""
        return jax.random.normal(key, shape + (action_dim,), jnp.float32)

    @staticmethod
    def sample_from_noise(params: GaussianParams, noise: jax.Array) -> jax.Array:
        """``mean + std * noise``."""
        return params.mean + jnp.exp(params.log_std) * noise

    @staticmethod
    def mode(params: GaussianParams) -> jax.Array:
        return params.mean

    @staticmethod
    def log_prob(params: GaussianParams, action: jax.Array) -> jax.Array:
        z = (action - params.mean) * jnp.exp(-params.log_std)
        return jnp.sum(-0.5 * z**2 - params.log_std - 0.5 * _LOG_2PI, axis=-1)

    @staticmethod
    def entropy(params: GaussianParams) -> jax.Array:
        return jnp.sum(params.log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1) * jnp.ones(
            params.mean.shape[:-1]
        )

    @staticmethod
    def kl(p: GaussianParams, q: GaussianParams) -> jax.Array:
        """KL[p || q], exact."""
        var_p = jnp.exp(2.0 * p.log_std)
        var_q = jnp.exp(2.0 * q.log_std)
        return jnp.sum(
            q.log_std - p.log_std + (var_p + (p.mean - q.mean) ** 2) / (2.0 * var_q) - 0.5,
            axis=-1,
        )


class EpsGreedyParams(NamedTuple):
    """Parameters of an ε-greedy policy: ``q`` ``[..., A]`` action values, ``epsilon`` ``[...]``."""

    q: jax.Array
    epsilon: jax.Array


class EpsilonGreedy:
    """ε-greedy over ``A`` discrete actions (Mnih et al. 2015): a uniform random action
    with probability ``ε``, else ``argmax_a q``. Parameters: ``EpsGreedyParams``."""

    discrete = True

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...], action_dim: int) -> jax.Array:
        """Uniform ``[*shape, 2]``: the explore coin and the random action."""
        del action_dim
        return jax.random.uniform(key, shape + (2,), jnp.float32)

    @staticmethod
    def sample_from_noise(params: EpsGreedyParams, noise: jax.Array) -> jax.Array:
        num_actions = params.q.shape[-1]
        random_action = jnp.minimum(
            (noise[..., 1] * num_actions).astype(jnp.int32), num_actions - 1
        )
        greedy = jnp.argmax(params.q, axis=-1).astype(jnp.int32)
        return jnp.where(noise[..., 0] < params.epsilon, random_action, greedy)

    @staticmethod
    def mode(params: EpsGreedyParams) -> jax.Array:
        return jnp.argmax(params.q, axis=-1).astype(jnp.int32)

    @staticmethod
    def log_prob(params: EpsGreedyParams, action: jax.Array) -> jax.Array:
        """``log((1 − ε)·[a = argmax q] + ε / A)``."""
        num_actions = params.q.shape[-1]
        greedy = jnp.argmax(params.q, axis=-1) == action
        return jnp.log((1.0 - params.epsilon) * greedy + params.epsilon / num_actions)


def for_action_space(space: Any) -> type[Categorical] | type[DiagGaussian]:
    """Returns the distribution class for a gymnax action space.

    Raises:
      TypeError: the space is neither ``Discrete`` nor ``Box``.
    """
    name = type(space).__name__
    if name == "Discrete":
        return Categorical
    if name == "Box":
        return DiagGaussian
    raise TypeError(f"unsupported action space {name}")
