"""Flax networks: an MLP torso with policy and value heads, and a dueling Q-network.

The policy and the value function are separate MLPs (as in PPO's reference
implementation and PureJaxRL), so acting only evaluates the policy network and
the values of a whole rollout are computed in one batched call afterwards.
Observations of any shape are flattened to ``[..., prod(obs_shape)]``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist import distributions, initializers

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}
_SQRT2 = float(np.sqrt(2.0))


def _dense(size: int, scale: float, dot_general: Callable | None) -> nn.Dense:
    """A Dense layer with orthogonal(``scale``) init; ``dot_general``: ``tuning.Tuning``'s
    (``None``: flax's own)."""
    extra = {} if dot_general is None else {"dot_general": dot_general}
    return nn.Dense(size, kernel_init=initializers.orthogonal(scale), **extra)


class MLP(nn.Module):
    """Dense layers with orthogonal(sqrt 2) init and a final linear layer."""

    hidden_sizes: Sequence[int]
    out_size: int
    activation: str = "tanh"
    out_scale: float = 1.0
    dot_general: Callable | None = None  # tuning.Tuning.dot_general

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(_dense(size, _SQRT2, self.dot_general)(x))
        return _dense(self.out_size, self.out_scale, self.dot_general)(x)


class Torso(nn.Module):
    """Observations ``[..., *obs_shape]`` -> features ``[..., F]`` (float32).

    ``"mlp"``: flatten. ``"cnn"`` (image observations ``[..., H, W, C]``): MinAtar's
    network (Young & Tian 2019, arXiv 1903.03176): one 3x3 convolution with 16
    channels, valid padding, ReLU, then flatten.
    """

    kind: str = "mlp"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
        x = obs.astype(jnp.float32)
        if self.kind == "cnn":
            x = x.reshape((-1,) + obs.shape[obs.ndim - self.obs_ndim:])
            x = nn.relu(nn.Conv(16, (3, 3), padding="VALID")(x))
        return x.reshape(batch_shape + (-1,))


class PolicyNetwork(nn.Module):
    """Maps observations ``[..., *obs_shape]`` to distribution parameters.

    Discrete: logits ``[..., A]``. Continuous: ``GaussianParams(mean, log_std)``
    with a state-independent learned ``log_std`` (initialised at 0).
    """

    hidden_sizes: Sequence[int]
    action_dim: int
    discrete: bool
    activation: str = "tanh"
    obs_ndim: int = 1
    torso: str = "mlp"
    dot_general: Callable | None = None  # tuning.Tuning.dot_general

    @nn.compact
    def __call__(self, obs: jax.Array) -> Any:
        x = Torso(self.torso, self.obs_ndim)(obs)
        out = MLP(
            self.hidden_sizes, self.action_dim, self.activation, 0.01, self.dot_general
        )(x)
        if self.discrete:
            return out
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return distributions.GaussianParams(out, jnp.broadcast_to(log_std, out.shape))


class ValueNetwork(nn.Module):
    """Maps observations ``[..., *obs_shape]`` to state values ``[...]`` (float32)."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1
    torso: str = "mlp"
    dot_general: Callable | None = None  # tuning.Tuning.dot_general

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = Torso(self.torso, self.obs_ndim)(obs)
        return MLP(self.hidden_sizes, 1, self.activation, 1.0, self.dot_general)(x)[..., 0]


class QNetwork(nn.Module):
    """Maps observations ``[..., *obs_shape]`` to action values ``Q(s, ·)`` ``[..., A]`` float32.

    ``dueling``: the dueling architecture (Wang et al. 2016, arXiv 1511.06581, eq. 9):
    shared layers ``hidden_sizes[:-1]``, then a value stream and an advantage stream
    of ``hidden_sizes[-1]`` units each, ``Q = V + A − mean_a A``. Otherwise one MLP.
    """

    hidden_sizes: Sequence[int]
    action_dim: int
    dueling: bool = True
    activation: str = "relu"
    obs_ndim: int = 1
    torso: str = "mlp"
    dot_general: Callable | None = None  # tuning.Tuning.dot_general (the non-dueling MLP)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = Torso(self.torso, self.obs_ndim)(obs)
        if not self.dueling:
            return MLP(
                self.hidden_sizes, self.action_dim, self.activation, dot_general=self.dot_general
            )(x)
        act = _ACTIVATIONS[self.activation]
        dense = lambda size, scale=_SQRT2: nn.Dense(
            size, kernel_init=initializers.orthogonal(scale)
        )
        for size in self.hidden_sizes[:-1]:
            x = act(dense(size)(x))
        value = dense(1, 1.0)(act(dense(self.hidden_sizes[-1])(x)))
        advantages = dense(self.action_dim, 1.0)(act(dense(self.hidden_sizes[-1])(x)))
        return value + advantages - jnp.mean(advantages, axis=-1, keepdims=True)
