"""Frame-deduplicated replay (``replay.frame_stack``): every stored transition's ``obs`` and
``next_obs`` come back exactly as added, across episode ends (both padding styles), repeated
frames and wrap-around; a frame is never overwritten while a transition references it; bytes
per transition; Ape-X's learner with it gives the plain replay's losses."""

import functools

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_dist import agents, errors, parallel
from jaxrl_dist.agents.apex import agent as apex
from jaxrl_dist.agents.apex import config as apex_config
from jaxrl_dist.anakin import on_device
from jaxrl_dist.envs import gymnax_env
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.replay import frame_stack, prioritized, sum_tree
from jaxrl_dist.sebulba import learner as host_learner

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest


class StackedFrameEnvs:
    """``B`` numpy envs of stacked random frames ``[H, W, C]`` (newest last), episodes of
    random lengths; at a reset the stack is padded with the reset frame ("repeat",
    Gymnasium's FrameStackObservation) or with zeros ("zeros", EnvPool). With probability
    ``repeat_frame`` a new frame is a copy of the last one (a static screen)."""

    def __init__(self, seed, envs, shape, stack, padding, lengths, repeat_frame=0.3):
        self.rng = np.random.default_rng(seed)
        self.shape, self.stack, self.padding = shape, stack, padding
        self.lengths, self.repeat_frame = lengths, repeat_frame
        self.stacks = [self._reset() for _ in range(envs)]
        self.left = [self._length() for _ in range(envs)]

    def _length(self):
        return int(self.rng.integers(self.lengths[0], self.lengths[1] + 1))

    def _frame(self, last=None):
        if last is not None and self.rng.random() < self.repeat_frame:
            return last.copy()
        return self.rng.integers(0, 256, self.shape, dtype=np.uint8)

    def _reset(self):
        first = self._frame()
        pad = first if self.padding == "repeat" else np.zeros_like(first)
        return np.stack([pad] * (self.stack - 1) + [first], axis=-1)

    def step(self):
        """``(obs, next_obs, done)``: ``[B, H, W, C]`` before and after the step (the
        final observation at an episode end), ``[B]`` bool; then resets ended envs."""
        obs, nxt, done = [], [], []
        for b, stack in enumerate(self.stacks):
            new = self._frame(stack[..., -1])
            after = np.concatenate([stack[..., 1:], new[..., None]], axis=-1)
            self.left[b] -= 1
            obs.append(stack)
            nxt.append(after)
            done.append(self.left[b] == 0)
            if done[-1]:
                self.stacks[b], self.left[b] = self._reset(), self._length()
            else:
                self.stacks[b] = after
        return np.stack(obs), np.stack(nxt), np.array(done)


def rollout(envs, steps, n):
    """``obs``, n-step ``next_obs`` ``[T, B, H, W, C]`` of one rollout: ``next_obs[t]`` is
    the successor of step ``t + m − 1``, ``m`` cut at the episode's and rollout's end."""
    obs, nxt, done = map(np.stack, zip(*[envs.step() for _ in range(steps)], strict=True))
    bootstrap = np.empty(done.shape, int)
    for t in range(steps):
        for b in range(done.shape[1]):
            last = t
            while last < min(t + n, steps) - 1 and not done[last, b]:
                last += 1
            bootstrap[t, b] = last
    return obs, nxt[bootstrap, np.arange(done.shape[1])[None, :]]


def items_of(obs, next_obs, serial):
    """A ``ReplayItem`` ``[T, B]`` whose action is each transition's serial number."""
    steps, envs = obs.shape[:2]
    action = (serial + np.arange(steps * envs)).reshape(steps, envs).astype(np.int32)
    zero = np.zeros((steps, envs), np.float32)
    return apex.ReplayItem(obs, action, zero, zero + 1, next_obs)


def fill_and_check(padding, adds, lengths, slack, capacity=40, steps=4, envs=3, n=3,
                   shape=(5, 6), stack=4):
    """Adds ``adds`` rollouts; after each, every sampleable slot must hold exactly the
    transition last written there. Returns the final state."""
    sim = StackedFrameEnvs(0, envs, shape, stack, padding, lengths)
    example = items_of(*(np.zeros((1, 1, *shape, stack), np.uint8),) * 2, 0)
    state = frame_stack.init(jax.tree.map(lambda x: x[0, 0], example), capacity, steps,
                             envs, slack)
    add = jax.jit(functools.partial(frame_stack.add, alpha=1.0))
    get = jax.jit(frame_stack.get)
    want_obs = np.zeros((capacity, *shape, stack), np.uint8)
    want_next, want_action = want_obs.copy(), np.full(capacity, -1)
    for a in range(adds):
        obs, nxt = rollout(sim, steps, n)
        items = items_of(obs, nxt, a * steps * envs)
        state = add(state, items, jnp.ones((steps, envs)))
        slots = (a * steps * envs + np.arange(steps * envs)) % capacity  # time-major
        want_obs[slots] = obs.reshape(-1, *shape, stack)
        want_next[slots] = nxt.reshape(-1, *shape, stack)
        want_action[slots] = items.action.reshape(-1)
        got = get(state, jnp.arange(capacity))
        live = np.asarray(sum_tree.leaves(state.tree))[:capacity] > 0
        assert not np.any(live & (want_action < 0))  # nothing sampleable unfilled
        np.testing.assert_array_equal(np.asarray(got.action)[live], want_action[live])
        assert np.array_equal(np.asarray(got.obs)[live], want_obs[live]), a
        assert np.array_equal(np.asarray(got.next_obs)[live], want_next[live]), a
    return state


@pytest.mark.parametrize("padding", ["repeat", "zeros"])
def test_stacks_come_back_exactly_across_episode_ends_and_wrap_around(padding):
    # 30 adds of 12 transitions into 40 slots: the replay wraps 9 times; episodes of 2-9
    # steps end inside rollouts, at their last step and across them.
    state = fill_and_check(padding, adds=30, lengths=(2, 9), slack=0.5)
    book = jax.device_get(state.book)
    assert int(book.dropped[0]) == 0
    assert np.all(np.asarray(sum_tree.leaves(state.tree))[:40] > 0)  # all 40 sampleable
    # Frames stored per transition over the last adds: one per env step, plus the final
    # frame of each episode (and a zero frame): well under the 2C = 8 of whole stacks.
    assert book.ledger.sum() / (len(book.ledger) * 12) < 1.6


def test_static_screens_and_one_step_episodes_stay_exact_when_frames_run_short():
    # Episodes of 1-2 steps and no slack: the frame budget is exceeded, so some
    # transitions are stored unsampleable; every sampleable one is still exact.
    state = fill_and_check("zeros", adds=25, lengths=(1, 2), slack=0.0)
    assert int(state.book.dropped[0]) > 0


def test_identical_frames_share_one_slot():
    frames = jnp.asarray(np.array([[1, 2], [3, 4], [1, 2], [0, 0], [3, 4], [1, 2]], np.uint8))
    usable = jnp.array([False, True, True, True, True, True])
    np.testing.assert_array_equal(frame_stack.representatives(frames, usable),
                                  [0, 1, 2, 3, 1, 2])


def test_bytes_per_transition_are_about_one_84x84_frame():
    obs = jnp.zeros((84, 84, 4), jnp.uint8)
    item = apex.ReplayItem(obs, jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()), obs)
    capacity = 1_000_000
    dedup = jax.eval_shape(lambda: frame_stack.init(item, capacity, 4, 64))
    plain = jax.eval_shape(lambda: prioritized.init(item, capacity))
    assert frame_stack.nbytes(dedup) / capacity < 8 * 1024
    assert frame_stack.nbytes(dedup) / capacity > 84 * 84
    assert frame_stack.nbytes(plain) / capacity > 2 * 84 * 84 * 4


def test_adds_of_another_shape_are_refused():
    obs = jnp.zeros((6, 5, 4), jnp.uint8)
    item = apex.ReplayItem(obs, jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()), obs)
    state = frame_stack.init(item, 32, 4, 2)
    batch = jax.tree.map(lambda x: jnp.zeros((4, 3, *x.shape), x.dtype), item)
    with pytest.raises(ValueError, match="trajectories per add"):
        frame_stack.add(state, batch, jnp.ones((4, 3)), 1.0)
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        frame_stack.init(item._replace(obs=jnp.zeros((4,))), 32, 4, 2)


SPEC = EnvSpec((12, 12, 4), gymnasium.spaces.Discrete(3), 3, True, None, np.uint8)


def config(**overrides):
    base = dict(env="gymnasium:StackedFrames-v0", num_envs=4, rollout_len=4,
                total_steps=16 * 12, buffer_capacity=64, batch_size=8, learner_steps=2,
                learning_starts=32, target_update_period=2, hidden_sizes=(16,))
    return apex_config.ApexConfig(**dict(base, **overrides))


def test_auto_turns_it_on_for_stacked_uint8_frames_only():
    assert apex_config.frame_replay_on(config(), SPEC)
    assert not apex_config.frame_replay_on(config(frame_stack_replay="off"), SPEC)
    minatar = SPEC._replace(obs_shape=(10, 10, 4), obs_dtype=np.float32)
    assert not apex_config.frame_replay_on(config(), minatar)
    with pytest.raises(errors.ConfigError, match="--frame_stack_replay=on needs stacked"):
        apex_config.frame_replay_on(config(frame_stack_replay="on"), SPEC._replace(
            obs_shape=(12, 12, 1)))
    with pytest.raises(errors.ConfigError, match="--obs_storage=uint8"):
        apex_config.frame_replay_on(config(frame_stack_replay="on"), minatar)


def learn_run(mode, batches):
    """Losses and final params of Ape-X's host learner (2 devices) on ``batches``."""
    agent = apex.Agent(config(frame_stack_replay=mode), SPEC, num_devices=2)
    learner = host_learner.HostLearner(agent.functions(), parallel.make_mesh(2))
    state = learner.init(jax.random.key(0))
    losses = []
    for i, batch in enumerate(batches):
        batch = jax.device_put(batch, learner.traj_sharding)
        state, metrics = learner.update(state, (batch,), jax.random.key(i))
        losses.append(float(metrics["loss/td"]))
    assert float(metrics.get("replay/dropped", 0)) == 0
    return agent, state, losses


def test_apex_learner_with_frame_replay_matches_the_plain_replay():
    # 12 updates of 16 transitions into 2 shards of 32: both wrap; episodes end inside.
    sim = StackedFrameEnvs(1, 4, (12, 12), 4, "zeros", (3, 10))
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(12):
        obs, nxt = rollout(sim, 4, 3)
        items = items_of(obs, nxt, 0)._replace(
            action=rng.integers(0, 3, (4, 4)).astype(np.int32),
            reward=rng.normal(size=(4, 4)).astype(np.float32),
            discount=(0.97 * (rng.random((4, 4)) > 0.2)).astype(np.float32),
        )
        batches.append(apex.ActorBatch(items, rng.random((4, 4)).astype(np.float32) + 0.1))
    agent, state, losses = learn_run("auto", batches)
    assert agent.frame_replay
    _, plain_state, plain_losses = learn_run("off", batches)
    assert plain_losses[-1] != 0
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state.params, plain_state.params)
    # Each device's shard rebuilds exactly the plain replay's stored stacks.
    replay, plain = jax.device_get(state.agent_state.replay), jax.device_get(
        plain_state.agent_state.replay)
    for d in range(2):
        half = functools.partial(lambda x, d: np.split(x, 2)[d], d=d)
        shard = jax.tree.map(half, replay)
        shard = shard._replace(position=shard.position[0], size=shard.size[0])
        got = frame_stack.get(shard, jnp.arange(32))
        want = jax.tree.map(half, plain.storage)
        assert np.array_equal(got.obs, want.obs) and np.array_equal(got.next_obs, want.next_obs)
    assert int(replay.book.dropped.sum()) == 0



@struct.dataclass
class FramesState(environment.EnvState):
    stack: jax.Array  # [6, 6, 4] float32 frames of 0..255
    time: int


class StackedFramesOnDevice(environment.Environment):
    """A gymnax env of stacked random byte frames (float32 values 0..255; newest last),
    zero-padded at reset; episodes terminate with probability 0.25 per step."""

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=20)

    def _frame(self, key):
        return jax.random.randint(key, (6, 6), 0, 256).astype(jnp.float32)

    def step_env(self, key, state, action, params):
        frame_key, end_key = jax.random.split(key)
        stack = jnp.concatenate([state.stack[..., 1:], self._frame(frame_key)[..., None]], -1)
        terminated = jax.random.uniform(end_key) < 0.25
        state = FramesState(stack=stack, time=state.time + 1)
        return stack, state, action.astype(jnp.float32), terminated, {}

    def reset_env(self, key, params):
        stack = jnp.zeros((6, 6, 4)).at[..., -1].set(self._frame(key))
        return stack, FramesState(stack=stack, time=0)

    def get_obs(self, state, params=None, key=None):
        return state.stack

    def action_space(self, params=None):
        return spaces.Discrete(3)

    def observation_space(self, params):
        return spaces.Box(0.0, 255.0, (6, 6, 4), jnp.float32)


def on_device_losses(mode):
    """Losses of 6 on-device updates (2 seeds, vmapped) on ``StackedFramesOnDevice``."""
    env_id = gymnax_env.register("StackedFramesOnDevice", StackedFramesOnDevice())
    cfg = agents.default_config(
        "apex", env_id, num_envs=4, rollout_len=4, total_steps=16 * 6, buffer_capacity=32,
        batch_size=8, learning_starts=16, target_update_period=2, hidden_sizes=(16,),
        obs_storage="uint8", frame_stack_replay=mode, frame_replay_slack=1.0,
    )
    learner = on_device.OnDeviceLearner(cfg, parallel.make_mesh(1), 2)
    init_keys, train_keys = learner.seed_keys(0)
    state = learner.init(init_keys)
    step = learner.make_train_chunk(1)
    losses = []
    for _ in range(6):
        state, metrics = step(state, train_keys)
        losses.append(np.asarray(metrics["loss/td"]))
    return np.array(losses), state


def test_on_device_learner_with_frame_replay_matches_the_plain_replay():
    # gymnax specs carry no dtype: "auto" leaves it off, "on" with --obs_storage=uint8.
    losses, state = on_device_losses("on")
    plain_losses, _ = on_device_losses("off")
    assert np.all(plain_losses[-1] != 0)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-6)
    book = jax.device_get(state.agent_state.replay.book)
    assert book.dropped.shape == (2, 1) and not book.dropped.any()  # [seeds, devices]
