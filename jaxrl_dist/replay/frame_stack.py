"""Prioritized replay of stacked-frame observations with each frame stored once.

An observation ``[H, W, C]`` that stacks the last ``C`` frames (``obs[..., -1]`` the
newest) shares ``C - 1`` frames with the one before it, and an n-step transition's
``next_obs`` is a later observation of the same trajectory. Storing both stacks per
transition (``prioritized``) holds each frame ``2C`` times; DQN's replay memory (Mnih
et al. 2015, Nature 518, Methods) and Dopamine's (Castro et al. 2018, arXiv
1812.06110) store a frame once and rebuild the stack when sampling. Here:

- a frame ring ``frames`` ``[F, H, W]`` holds the frames, and each transition slot
  holds the ``C`` frame slots of its ``obs`` and of its ``next_obs`` (int32), so a
  transition costs about one frame plus ``8C`` bytes of indices;
- ``add`` takes a rollout ``[T, B]`` (``B`` trajectories of ``T`` steps) and stores
  each *distinct* frame of each trajectory once: frames are matched by content (a
  hash, then an exact comparison), within the trajectory and against the previous
  add's last ``next_obs`` stack of the same trajectory position (the next rollout's
  ``obs[0]``). Nothing is assumed about the padding at episode starts (copies of the
  reset frame, zeros, anything), nor about where episodes end: a frame is shared only
  with an identical frame, so every stack is rebuilt exactly as it was added;
- eviction: transitions are evicted before the frames they reference. The frames of
  a transition were written by its own add or the one before it (a cached frame is
  used only by the add right after the one that wrote it). An add of ``K = T·B``
  transitions may write at most ``F − Σ`` (the frames written by the last
  ``A = ⌈N/K⌉`` adds) frames, so the frames of the ``A + 1`` adds whose transitions may
  still be live (``N`` of them) or cached are never overwritten: the ring overwrites
  frame ``s`` only when ``F`` later frames have been written. With ``F`` =
  ``frame_capacity(...)`` (one frame per transition and a slack for episode starts)
  the budget is never reached in practice; an add that would exceed it stores the
  frames it can and writes the transitions that lack one with priority 0 (never
  sampled; counted in ``book.dropped``).

All functions are pure and jit-able, with fixed shapes; the state is a pytree on the
learner device, one per replay shard.
"""

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dist.replay import prioritized

DEFAULT_SLACK = 1 / 16  # frames beyond one per transition, as a fraction of the capacity


class FrameStorage(NamedTuple):
    """``frames`` ``[F, H, W]`` (the observations' dtype, uint8 for pixels) and ``slots``:
    the item type with ``obs``/``next_obs`` replaced by ``[N, C]`` int32 frame slots,
    other leaves ``[N, ...]``."""

    frames: jax.Array
    slots: Any


class FrameBook(NamedTuple):
    """The frame ring's bookkeeping (one-element arrays are per-shard scalars).

    ``head`` ``[1]`` int32 next frame slot; ``adds`` ``[1]`` int32 adds so far;
    ``ledger`` ``[A]`` int32 frames written by each of the last ``A`` adds (a ring);
    ``dropped`` ``[1]`` int32 transitions stored with priority 0 for lack of frame
    slots; ``cache_slots`` ``[B, C]`` int32 the frame slots of each trajectory's last
    ``next_obs``; ``cache_fresh`` ``[B, C]`` bool whether the last add wrote that frame.
    """

    head: jax.Array
    adds: jax.Array
    ledger: jax.Array
    dropped: jax.Array
    cache_slots: jax.Array
    cache_fresh: jax.Array


class FrameReplayState(NamedTuple):
    """``prioritized.ReplayState``'s fields (``storage`` a ``FrameStorage``) and ``book``."""

    storage: FrameStorage
    tree: jax.Array
    position: jax.Array
    size: jax.Array
    book: FrameBook


def frame_capacity(capacity: int, steps: int, envs: int, stack: int,
                   slack: float = DEFAULT_SLACK) -> int:
    """``F``: frame slots for ``capacity`` transitions added ``steps × envs`` at a time.

    ``(A + 1)·K`` (one frame per transition of the ``A + 1`` adds that may be
    referenced, ``K = steps·envs``, ``A = ⌈capacity/K⌉``) plus ``max(envs·stack,
    ⌈slack·capacity⌉)`` for the whole stacks of first observations and episode starts.
    """
    per_add = steps * envs
    adds = -(-capacity // per_add)
    return (adds + 1) * per_add + max(envs * stack, math.ceil(slack * capacity))


def init(example_item: Any, capacity: int, steps: int, envs: int,
         slack: float = DEFAULT_SLACK) -> FrameReplayState:
    """An empty replay of ``capacity`` transitions, added ``steps × envs`` at a time.

    Args:
      example_item: a NamedTuple with ``obs`` and ``next_obs`` ``[H, W, C]`` (frames on
        the last axis; their dtype is the frames') and any other leaves (stored as is).
      capacity: ``N`` transitions; steps, envs: ``T`` and ``B`` of every ``add``.
      slack: see ``frame_capacity``.

    Raises:
      ValueError: ``obs`` is not ``[H, W, C]``, or ``capacity < steps · envs``.
    """
    obs = jnp.asarray(example_item.obs)
    if obs.ndim != 3:
        raise ValueError(f"frame replay needs [H, W, C] observations, got {obs.shape}")
    if capacity < steps * envs:
        raise ValueError(f"capacity {capacity} < transitions per add {steps * envs}")
    height, width, stack = obs.shape
    index = jnp.zeros((stack,), jnp.int32)
    inner = prioritized.init(example_item._replace(obs=index, next_obs=index), capacity)
    num_frames = frame_capacity(capacity, steps, envs, stack, slack)
    scalar = lambda: jnp.zeros((1,), jnp.int32)  # a buffer each (states are donated)
    book = FrameBook(
        scalar(), scalar(), jnp.zeros((-(-capacity // (steps * envs)),), jnp.int32),
        scalar(), jnp.zeros((envs, stack), jnp.int32), jnp.zeros((envs, stack), bool),
    )
    frames = jnp.zeros((num_frames, height, width), obs.dtype)
    return FrameReplayState(
        FrameStorage(frames, inner.storage), inner.tree, inner.position, inner.size, book
    )


def _inner(state: FrameReplayState) -> prioritized.ReplayState:
    """The transition table as a ``prioritized.ReplayState`` (items = frame slots)."""
    return prioritized.ReplayState(state.storage.slots, state.tree, state.position, state.size)


HASHES = 4  # hash values per frame (the sort keys that group identical frames)


def _fingerprint(frames: jax.Array) -> jax.Array:
    """``[..., P]`` frames of bytes -> ``[..., HASHES]`` float32 sums ``Σ_k x_k w_jk`` with
    fixed random integer weights ``w_jk`` in 1..8, as one bfloat16 matmul with float32
    accumulation (bytes and weights are exact in bfloat16; 5x faster than float32 on
    CPU): every partial sum is an integer below 2^24, exact whatever the summation
    order, so equal frames hash equal. Unequal ones rarely collide; a collision (or an
    inexact sum) costs a frame slot, never exactness: ``representatives`` compares the
    frames themselves."""
    if frames.shape[-1] * 255 * 8 >= 2**24:
        raise ValueError(f"frames of {frames.shape[-1]} values are too large to hash exactly")
    weights = np.random.default_rng(20261205).integers(1, 9, (frames.shape[-1], HASHES))
    return jnp.matmul(frames.astype(jnp.bfloat16), jnp.asarray(weights, jnp.bfloat16),
                      preferred_element_type=jnp.float32)


def representatives(frames: jax.Array, usable: jax.Array) -> jax.Array:
    """For each of ``M`` frames, the index of the first frame identical to it.

    Args:
      frames: ``[M, P]`` one trajectory's candidate frames, flattened.
      usable: ``[M]`` bool; an unusable frame is nobody's representative but its own.

    Returns:
      ``[M]`` int32 ``r`` with ``r[i] <= i``, ``frames[r[i]] == frames[i]`` exactly and
      ``r[r[i]] == r[i]``; ``r[i] = i`` when no earlier usable frame equals frame ``i``
      (or, rarely, when a hash collision hides it).
    """
    chex.assert_rank(frames, 2)
    num = frames.shape[0]
    index = jnp.arange(num, dtype=jnp.int32)
    group = jnp.where(usable, 0, 1 + index).astype(jnp.float32)
    keys = (group, *jnp.moveaxis(_fingerprint(frames), -1, 0))
    *keys, order = jax.lax.sort((*keys, index), num_keys=len(keys), is_stable=True)
    keys = jnp.stack(keys)
    starts = jnp.concatenate([jnp.ones((1,), bool), jnp.any(keys[:, 1:] != keys[:, :-1], 0)])
    first = jax.lax.cummax(jnp.where(starts, index, 0))
    rep = jnp.zeros_like(index).at[order].set(order[first])
    identical = jnp.all(frames == frames[rep], axis=-1)
    return jnp.where(identical, rep, index)


def _candidates(state: FrameReplayState, obs: jax.Array, next_obs: jax.Array) -> jax.Array:
    """``[B, M, H·W]``, ``M = C + 2TC``: per trajectory the cached frames, then the
    frames of ``obs`` (``T`` stacks of ``C``), then those of ``next_obs``."""
    frames = state.storage.frames
    flat = frames.reshape(frames.shape[0], -1)

    def per_env(stacks):  # [T, B, H, W, C] -> [B, T·C, H·W]
        steps, envs, stack = stacks.shape[0], stacks.shape[1], stacks.shape[-1]
        return jnp.moveaxis(stacks, -1, 2).swapaxes(0, 1).reshape(envs, steps * stack, -1)

    cached = flat[state.book.cache_slots]
    return jnp.concatenate([cached, per_env(obs), per_env(next_obs)], axis=1)


def _check_add(state: FrameReplayState, obs: jax.Array, next_obs: jax.Array,
               priorities: jax.Array) -> None:
    chex.assert_rank(priorities, 2)
    steps, envs = priorities.shape
    envs_cached, stack = state.book.cache_slots.shape
    frame_shape = state.storage.frames.shape[1:]
    want = (steps, envs, *frame_shape, stack)
    if obs.shape != want or next_obs.shape != want:
        raise ValueError(f"obs/next_obs must be {want}, got {obs.shape} and {next_obs.shape}")
    if envs != envs_cached:
        raise ValueError(f"this replay takes {envs_cached} trajectories per add, got {envs}")
    num = prioritized.capacity(_inner(state))
    if -(-num // (steps * envs)) > state.book.ledger.shape[0]:
        raise ValueError(
            f"{steps * envs} transitions per add is fewer than the replay was built for"
        )


def add(state: FrameReplayState, items: Any, priorities: jax.Array,
        alpha: float) -> FrameReplayState:
    """Adds a rollout's transitions: ``items`` leaves ``[T, B, ...]`` (``obs``,
    ``next_obs`` ``[T, B, H, W, C]``), trajectory ``b`` of this add continuing
    trajectory ``b`` of the last; ``priorities`` ``[T, B]`` (>= 0), stored as ``p^α``.

    Transitions are written at the next ``T·B`` slots in time-major order (as
    ``prioritized.add`` of the items flattened to ``[T·B, ...]``). A transition whose
    frames found no slot within the budget (see the module doc) gets priority 0.

    Raises:
      ValueError: shapes unlike ``init``'s, or ``alpha < 0``.
    """
    _check_add(state, items.obs, items.next_obs, priorities)
    steps, envs = priorities.shape
    stack = state.book.cache_slots.shape[1]
    book, frames = state.book, state.storage.frames
    num_frames = frames.shape[0]
    candidates = _candidates(state, items.obs, items.next_obs)  # [B, M, P]
    num = candidates.shape[1]
    index = jnp.arange(num, dtype=jnp.int32)
    is_cached = index < stack
    usable = jnp.concatenate(
        [book.cache_fresh, jnp.ones((envs, num - stack), bool)], axis=1
    )
    rep = jax.vmap(representatives)(candidates, usable)  # [B, M]
    own = (rep == index) & ~is_cached
    ordinal = (jnp.cumsum(own.reshape(-1)) - 1).reshape(own.shape).astype(jnp.int32)
    budget = num_frames - jnp.sum(book.ledger)
    stored = own & (ordinal < budget)
    cached_slots = jnp.pad(book.cache_slots, ((0, 0), (0, num - stack)))
    slot_self = jnp.where(is_cached, cached_slots, (book.head[0] + ordinal) % num_frames)
    slot = jnp.take_along_axis(slot_self, rep, axis=1)
    present = jnp.take_along_axis(stored | (usable & is_cached), rep, axis=1)
    fresh = jnp.take_along_axis(stored, rep, axis=1)
    flat_frames = frames.reshape(num_frames, -1).at[
        jnp.where(stored, slot_self, num_frames).reshape(-1)
    ].set(candidates.reshape(envs * num, -1), mode="drop")

    def stacks(x, first):  # [B, M] -> [T, B, C] of the stacks starting at ``first``
        return x[:, first:first + steps * stack].reshape(envs, steps, stack).swapaxes(0, 1)

    obs_slots, next_slots = stacks(slot, stack), stacks(slot, stack + steps * stack)
    valid = (jnp.all(stacks(present, stack), -1)
             & jnp.all(stacks(present, stack + steps * stack), -1))
    slot_items = items._replace(obs=obs_slots, next_obs=next_slots)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    inner = prioritized.add(
        _inner(state), jax.tree.map(flat, slot_items),
        flat(jnp.where(valid, priorities, 0.0)), alpha,
    )
    written = jnp.sum(stored, dtype=jnp.int32)
    new_book = FrameBook(
        (book.head + written) % num_frames,
        book.adds + 1,
        book.ledger.at[book.adds[0] % book.ledger.shape[0]].set(written),
        book.dropped + jnp.sum(~valid, dtype=jnp.int32),
        next_slots[-1],
        stacks(fresh, stack + steps * stack)[-1],
    )
    storage = FrameStorage(flat_frames.reshape(frames.shape), inner.storage)
    return FrameReplayState(storage, inner.tree, inner.position, inner.size, new_book)


def stacked(frames: jax.Array, slots: jax.Array) -> jax.Array:
    """Stacks rebuilt from the frame ring: ``frames`` ``[F, H, W]``, ``slots`` ``[..., C]``
    int32 -> ``[..., H, W, C]``."""
    flat = frames.reshape(frames.shape[0], -1)[slots.reshape(-1)]
    return jnp.moveaxis(flat.reshape(slots.shape + frames.shape[1:]), slots.ndim - 1, -1)


def get(state: FrameReplayState, indices: jax.Array) -> Any:
    """The items at transition slots ``indices`` (``[B]`` int32), ``obs``/``next_obs``
    rebuilt ``[B, H, W, C]``; other leaves ``[B, ...]``."""
    rows = jax.tree.map(lambda s: s[indices], state.storage.slots)
    return _rebuilt(state, rows)


def _rebuilt(state: FrameReplayState, rows: Any) -> Any:
    frames = state.storage.frames
    return rows._replace(obs=stacked(frames, rows.obs), next_obs=stacked(frames, rows.next_obs))


def sample(state: FrameReplayState, key: jax.Array, batch_size: int,
           beta: float) -> prioritized.Sample:
    """``prioritized.sample`` of the transitions, their stacks rebuilt (``[B, H, W, C]``).

    Raises:
      ValueError: ``beta < 0`` or ``batch_size <= 0``.
    """
    drawn = prioritized.sample(_inner(state), key, batch_size, beta)
    return drawn._replace(items=_rebuilt(state, drawn.items))


def update_priorities(state: FrameReplayState, indices: jax.Array, priorities: jax.Array,
                      alpha: float) -> FrameReplayState:
    """``prioritized.update_priorities`` (``indices``, ``priorities`` ``[B]``).

    Raises:
      ValueError: ``alpha < 0``.
    """
    tree = prioritized.update_priorities(_inner(state), indices, priorities, alpha).tree
    return state._replace(tree=tree)


def nbytes(state: Any) -> int:
    """Bytes of a replay state's arrays (or of their ``jax.eval_shape`` structs)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))
