"""Flax networks: torsos, policy and value heads, an actor-critic with a shared pixel
torso, and a dueling Q-network.

Torsos map observations ``[..., *obs_shape]`` to float32 features ``[..., F]``:
``mlp`` flattens; ``cnn`` is MinAtar's one 3x3 convolution; ``nature`` and
``impala`` are the Atari papers' pixel torsos (``NatureTorso``: Mnih et al. 2015;
``ImpalaTorso``: Espeholt et al. 2018, Fig. 3). Image observations are HWC
(channels last, ``[..., H, W, C]``); the pixel torsos scale ``uint8`` pixels by
1/255 themselves (``scale_pixels``), so observations stay ``uint8`` up to here.

With ``mlp``/``cnn`` the policy and the value function are separate networks
(``PolicyNetwork``, ``ValueNetwork``; as in PPO's reference implementation and
PureJaxRL), so acting only evaluates the policy network and the values of a
whole rollout are computed in one batched call afterwards. With a pixel torso
they share it (``ActorCritic``), as in the papers and in cleanba/PureJaxRL's
Atari agents: a loss that needs both heads runs the torso once.
"""

from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist.nn import distributions, initializers

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}
_SQRT2 = float(np.sqrt(2.0))


def _dense(size: int, scale: float, dot_general: Callable | None) -> nn.Dense:
    """A Dense layer with orthogonal(``scale``) init; ``dot_general``: ``tuning.Tuning``'s
    (``None``: flax's own)."""
    extra = {} if dot_general is None else {"dot_general": dot_general}
    return nn.Dense(size, kernel_init=initializers.orthogonal(scale), **extra)


def _conv(features: int, kernel: int, conv_general_dilated: Callable | None,
          **kwargs) -> nn.Conv:
    """A ``kernel`` x ``kernel`` Conv layer of ``features`` channels (``kwargs``: strides,
    padding, init); ``conv_general_dilated``: ``tuning.Tuning``'s (``None``: flax's own)."""
    if conv_general_dilated is not None:
        kwargs["conv_general_dilated"] = conv_general_dilated
    return nn.Conv(features, (kernel, kernel), **kwargs)


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
    channels, valid padding, ReLU, then flatten. ``conv_general_dilated``: the
    convolution's (``tuning.Tuning``'s).
    """

    kind: str = "mlp"
    obs_ndim: int = 1
    conv_general_dilated: Callable | None = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
        x = obs.astype(jnp.float32)
        if self.kind == "cnn":
            x = x.reshape((-1,) + obs.shape[obs.ndim - self.obs_ndim:])
            x = nn.relu(_conv(16, 3, self.conv_general_dilated, padding="VALID")(x))
        return x.reshape(batch_shape + (-1,))


def scale_pixels(obs: jax.Array) -> jax.Array:
    """``obs`` as float32: ``uint8`` pixels scaled by 1/255 to ``[0, 1]``, any other
    dtype (MinAtar's 0/1 bool or float32 planes) converted unscaled."""
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


def _images(obs: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    """``obs`` ``[..., H, W, C]`` -> (float32 ``[N, H, W, C]`` via ``scale_pixels``,
    the leading shape ``[...]`` of the ``N`` images)."""
    chex.assert_rank(obs, {3, 4, 5})  # [H, W, C], [B, H, W, C] or [T, B, H, W, C]
    batch_shape = obs.shape[:-3]
    return scale_pixels(obs.reshape((-1,) + obs.shape[-3:])), batch_shape


def _features(x: jax.Array, batch_shape: tuple[int, ...], size: int, dot_general):
    """Flatten ``x`` ``[N, ...]``, dense ``size`` with ReLU, back to ``[*batch_shape, size]``."""
    x = nn.relu(_dense(size, _SQRT2, dot_general)(x.reshape((x.shape[0], -1))))
    x = x.reshape(batch_shape + (size,))
    chex.assert_shape(x, batch_shape + (size,))
    return x


class NatureTorso(nn.Module):
    """The DQN torso of Mnih et al. 2015 (Nature 518, "Human-level control through deep
    reinforcement learning", Methods, "Model architecture").

    ``[..., H, W, C]`` (uint8 pixels or float; ``H, W >= 36``, which the VALID
    convolutions need to leave 1x1) -> ``[..., 512]`` float32: conv 32 8x8 stride
    4, conv 64 4x4 stride 2, conv 64 3x3 stride 1 (VALID padding, ReLU each),
    flatten, dense 512 with ReLU. On 84x84x4: 1,684,128 parameters. Convolutions
    and the dense layer: orthogonal(sqrt 2) init (CleanRL's Atari PPO);
    ``dot_general``: the dense layer's, ``conv_general_dilated`` the convolutions'
    (``tuning.Tuning``'s).
    """

    dot_general: Callable | None = None
    conv_general_dilated: Callable | None = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x, batch_shape = _images(obs)
        for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = nn.relu(_conv(
                features, kernel, self.conv_general_dilated, strides=(stride, stride),
                padding="VALID", kernel_init=initializers.orthogonal(_SQRT2),
            )(x))
        return _features(x, batch_shape, 512, self.dot_general)


class ResidualBlock(nn.Module):
    """IMPALA's residual block: ``x + conv(relu(conv(relu(x))))``, 3x3 SAME convolutions
    of ``x``'s channels; ``[N, H, W, C]`` -> ``[N, H, W, C]`` float32.
    ``conv_general_dilated``: the convolutions' (``tuning.Tuning``'s)."""

    conv_general_dilated: Callable | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        y = _conv(channels, 3, self.conv_general_dilated, padding="SAME")(nn.relu(x))
        y = _conv(channels, 3, self.conv_general_dilated, padding="SAME")(nn.relu(y))
        return x + y


class ImpalaTorso(nn.Module):
    """IMPALA's "large" torso (Espeholt et al. 2018, arXiv 1802.01561, Fig. 3, right).

    ``[..., H, W, C]`` (uint8 pixels or float) -> ``[..., 256]`` float32: for each of
    ``channels`` (16, 32, 32) a stack of conv 3x3 stride 1 SAME, max-pool 3x3 stride
    2 SAME and two ``ResidualBlock``; then ReLU, flatten, dense 256 with ReLU. On
    84x84x4 the stacks leave 11x11x32 (1,089,232 parameters in all). Convolutions:
    flax's default (LeCun-normal) init with ``conv_general_dilated``; the dense layer
    orthogonal(sqrt 2) with ``dot_general`` (both ``tuning.Tuning``'s).
    """

    channels: Sequence[int] = (16, 32, 32)
    dot_general: Callable | None = None
    conv_general_dilated: Callable | None = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x, batch_shape = _images(obs)
        conv = self.conv_general_dilated
        for channels in self.channels:
            x = _conv(channels, 3, conv, padding="SAME")(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            x = ResidualBlock(conv)(ResidualBlock(conv)(x))
        return _features(nn.relu(x), batch_shape, 256, self.dot_general)


def make_torso(kind: str, obs_ndim: int, dot_general: Callable | None = None,
               conv_general_dilated: Callable | None = None) -> nn.Module:
    """The torso ``kind`` (``"mlp"``, ``"cnn"``, ``"nature"`` or ``"impala"``) for
    observations of rank ``obs_ndim``; ``dot_general`` goes to a pixel torso's dense layer,
    ``conv_general_dilated`` to every convolution (both ``tuning.Tuning``'s)."""
    if kind == "nature":
        return NatureTorso(dot_general, conv_general_dilated)
    if kind == "impala":
        return ImpalaTorso(dot_general=dot_general, conv_general_dilated=conv_general_dilated)
    return Torso(kind, obs_ndim, conv_general_dilated)


def _dist_params(out: jax.Array, discrete: bool, log_std: jax.Array | None) -> Any:
    """A policy head's output ``[..., A]`` as distribution parameters: the logits, or
    ``GaussianParams(out, log_std)`` with the state-independent ``log_std`` ``[A]``."""
    if discrete:
        return out
    return distributions.GaussianParams(out, jnp.broadcast_to(log_std, out.shape))


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
    conv_general_dilated: Callable | None = None  # tuning.Tuning.conv_general_dilated

    @nn.compact
    def __call__(self, obs: jax.Array) -> Any:
        x = make_torso(self.torso, self.obs_ndim, self.dot_general,
                       self.conv_general_dilated)(obs)
        out = MLP(
            self.hidden_sizes, self.action_dim, self.activation, 0.01, self.dot_general
        )(x)
        log_std = None
        if not self.discrete:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return _dist_params(out, self.discrete, log_std)


class ValueNetwork(nn.Module):
    """Maps observations ``[..., *obs_shape]`` to state values ``[...]`` (float32)."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    obs_ndim: int = 1
    torso: str = "mlp"
    dot_general: Callable | None = None  # tuning.Tuning.dot_general
    conv_general_dilated: Callable | None = None  # tuning.Tuning.conv_general_dilated

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = make_torso(self.torso, self.obs_ndim, self.dot_general,
                       self.conv_general_dilated)(obs)
        return MLP(self.hidden_sizes, 1, self.activation, 1.0, self.dot_general)(x)[..., 0]


class ActorCritic(nn.Module):
    """A policy head and a value head on ONE shared pixel torso (``torso``: ``"nature"``
    or ``"impala"``), as A3C's ("all non-output layers shared", Mnih et al. 2016,
    sec. 4) and IMPALA's (Espeholt et al. 2018, Fig. 3) networks.

    Observations ``[..., H, W, C]`` (uint8 pixels or float). Heads: the
    ``hidden_sizes`` layers (may be empty) then a linear output, orthogonal init of
    scale 0.01 (policy) and 1.0 (value), like ``PolicyNetwork``/``ValueNetwork``.
    Parameters: ``shared_torso``, ``policy_head``, ``value_head`` (and ``log_std``
    ``[A]`` for continuous actions). ``__call__`` (used by ``init``) is
    ``policy_and_value``.
    """

    hidden_sizes: Sequence[int]
    action_dim: int
    discrete: bool
    activation: str = "relu"
    torso: str = "nature"
    dot_general: Callable | None = None  # tuning.Tuning.dot_general
    conv_general_dilated: Callable | None = None  # tuning.Tuning.conv_general_dilated

    def setup(self):
        self.shared_torso = make_torso(self.torso, 3, self.dot_general,
                                       self.conv_general_dilated)
        self.policy_head = MLP(
            self.hidden_sizes, self.action_dim, self.activation, 0.01, self.dot_general
        )
        self.value_head = MLP(self.hidden_sizes, 1, self.activation, 1.0, self.dot_general)
        self.log_std = None
        if not self.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))

    def _policy_of(self, features: jax.Array) -> Any:
        return _dist_params(self.policy_head(features), self.discrete, self.log_std)

    def policy(self, obs: jax.Array) -> Any:
        """Distribution parameters of π(·|obs) (``PolicyNetwork``'s), ``[..., A]``."""
        return self._policy_of(self.shared_torso(obs))

    def value(self, obs: jax.Array) -> jax.Array:
        """V(obs), ``[...]`` float32."""
        return self.value_head(self.shared_torso(obs))[..., 0]

    def policy_and_value(self, obs: jax.Array) -> tuple[Any, jax.Array]:
        """``(π(·|obs), V(obs))`` from one torso pass."""
        features = self.shared_torso(obs)
        return self._policy_of(features), self.value_head(features)[..., 0]

    def policy_and_values(self, obs: jax.Array, next_obs: jax.Array):
        """``(π(·|obs), V(obs), V(next_obs))``, ``obs`` and ``next_obs`` ``[T, ...]``
        alike, from one torso pass over both (concatenated along the time axis)."""
        chex.assert_equal_shape([obs, next_obs])
        features = self.shared_torso(jnp.concatenate([obs, next_obs], axis=0))
        values = self.value_head(features)[..., 0]
        steps = obs.shape[0]
        return self._policy_of(features[:steps]), values[:steps], values[steps:]

    def __call__(self, obs: jax.Array) -> tuple[Any, jax.Array]:
        return self.policy_and_value(obs)


class QNetwork(nn.Module):
    """Maps observations ``[..., *obs_shape]`` to action values ``Q(s, ·)`` ``[..., A]`` float32.

    ``dueling``: the dueling architecture (Wang et al. 2016, arXiv 1511.06581, eq. 9):
    shared layers ``hidden_sizes[:-1]``, then a value stream and an advantage stream
    of ``hidden_sizes[-1]`` units each, ``Q = V + A − mean_a A``; with no
    ``hidden_sizes`` (a pixel torso's features) each stream is one linear layer.
    Otherwise one MLP. ``torso``: ``make_torso``'s kinds.
    """

    hidden_sizes: Sequence[int]
    action_dim: int
    dueling: bool = True
    activation: str = "relu"
    obs_ndim: int = 1
    torso: str = "mlp"
    # tuning.Tuning.dot_general: the non-dueling MLP, a pixel torso's dense layer and the
    # streams of a dueling network without hidden_sizes
    dot_general: Callable | None = None
    conv_general_dilated: Callable | None = None  # tuning.Tuning's: a torso's convolutions

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = make_torso(self.torso, self.obs_ndim, self.dot_general,
                       self.conv_general_dilated)(obs)
        if not self.dueling:
            return MLP(
                self.hidden_sizes, self.action_dim, self.activation, dot_general=self.dot_general
            )(x)
        act = _ACTIVATIONS[self.activation]
        if not self.hidden_sizes:  # (a pixel torso's features) streams of one linear layer
            value = _dense(1, 1.0, self.dot_general)(x)
            advantages = _dense(self.action_dim, 1.0, self.dot_general)(x)
            return value + advantages - jnp.mean(advantages, axis=-1, keepdims=True)
        dense = lambda size, scale=_SQRT2: nn.Dense(
            size, kernel_init=initializers.orthogonal(scale)
        )
        for size in self.hidden_sizes[:-1]:
            x = act(dense(size)(x))
        value = dense(1, 1.0)(act(dense(self.hidden_sizes[-1])(x)))
        advantages = dense(self.action_dim, 1.0)(act(dense(self.hidden_sizes[-1])(x)))
        return value + advantages - jnp.mean(advantages, axis=-1, keepdims=True)
