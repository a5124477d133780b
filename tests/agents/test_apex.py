"""Ape-X DQN: exploration ladder, ε-greedy, dueling head, actor priorities against a plain
loop, the sharded replay, and the learner step on a mesh."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, errors, parallel, types
from jaxrl_dist.agents.apex import agent as apex
from jaxrl_dist.anakin import on_device
from jaxrl_dist.nn import distributions

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

SMALL_ALPHA = 0.6
SMALL = dict(num_envs=8, rollout_len=8, total_steps=8 * 8 * 6, buffer_capacity=1024,
             batch_size=32, learning_starts=128, target_update_period=4, hidden_sizes=(32, 32),
             learner_steps=2, n_step=3, priority_alpha=SMALL_ALPHA)


def make(num_devices=1, num_seeds=1, **overrides):
    cfg = agents.default_config("apex", "CartPole-v1", **dict(SMALL, **overrides))
    return on_device.OnDeviceLearner(cfg, parallel.make_mesh(num_devices), num_seeds)


@functools.cache
def run(num_devices=1, num_updates=6):
    """States (on host) after each of ``num_updates`` updates, and the metrics; cached."""
    learner = make(num_devices)
    init_keys, train_keys = learner.seed_keys(0)
    state = learner.init(init_keys)
    states, history = [], []
    step = learner.make_train_chunk(1)
    for _ in range(num_updates):
        state, metrics = step(state, train_keys)
        states.append(jax.device_get(state))
        history.append(jax.device_get(metrics))
    return learner, state, states, history


def test_epsilon_ladder_is_the_papers():
    eps = np.asarray(apex.epsilons(jnp.arange(8), 8, 0.4, 7.0))
    np.testing.assert_allclose(eps, [0.4 ** (1 + 7 * i / 7) for i in range(8)], rtol=1e-6)
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    np.testing.assert_allclose(apex.epsilons(jnp.arange(1), 1, 0.4, 7.0), [0.4])


def test_epsilon_greedy_samples_and_log_probs():
    dist = distributions.EpsilonGreedy
    q = jnp.array([[0.0, 2.0, 1.0]] * 2)
    params = distributions.EpsGreedyParams(q, jnp.array([0.3, 0.0]))
    noise = dist.noise(jax.random.key(0), (40_000, 2), 3)
    actions = np.asarray(jax.vmap(lambda n: dist.sample_from_noise(params, n))(noise))
    freq = np.stack([(actions[:, 0] == a).mean() for a in range(3)])
    np.testing.assert_allclose(freq, [0.1, 0.8, 0.1], atol=0.01)
    assert (actions[:, 1] == 1).all()  # ε = 0: greedy
    probs = np.exp([np.asarray(dist.log_prob(params, jnp.full(2, a))) for a in range(3)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 0], [0.1, 0.8, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(dist.mode(params), [1, 1])


def test_dueling_head_averages_to_the_state_value():
    learner = make()
    params = learner.agent.init_params(jax.random.key(1))
    obs = jax.random.normal(jax.random.key(2), (5, 4))
    q, state = learner.agent.q_net.apply(params["q"], obs, capture_intermediates=True)
    # The value stream's output layer is the one Dense with a single unit.
    values = [x for x in jax.tree.leaves(state["intermediates"]) if x.shape == (5, 1)]
    assert len(values) == 1
    np.testing.assert_allclose(q.mean(axis=-1), values[0][:, 0], rtol=1e-5, atol=1e-6)
    assert q.shape == (5, 2)


def loop_priorities(q_fn, traj, gamma, n, eps):
    """Ape-X's actor priorities from the definition, one (t, b) at a time."""
    num_steps, batch = traj.reward.shape
    out = np.zeros((num_steps, batch))
    returns = np.zeros((num_steps, batch))
    for b in range(batch):
        for t in range(num_steps):
            g, factor, k = 0.0, 1.0, 0
            while True:
                g += factor * traj.reward[t + k, b]
                factor *= 0.0 if traj.terminated[t + k, b] else gamma
                end = traj.terminated[t + k, b] or traj.truncated[t + k, b]
                if k + 1 == n or t + k + 1 == num_steps or end:
                    break
                k += 1
            q_next = np.asarray(q_fn(traj.next_obs[t + k, b]))
            target = g + factor * q_next[np.argmax(q_next)]
            q_taken = np.asarray(q_fn(traj.obs[t, b]))[traj.action[t, b]]
            out[t, b] = abs(target - q_taken) + eps
            returns[t, b] = g
    return out, returns


def test_actor_priorities_match_a_plain_loop():
    learner = make(n_step=3)
    params = learner.agent.init_params(jax.random.key(3))
    rng = np.random.default_rng(0)
    num_steps, batch = 7, 3
    obs = rng.normal(size=(num_steps, batch, 4)).astype(np.float32)
    next_obs = rng.normal(size=(num_steps, batch, 4)).astype(np.float32)
    terminated = rng.random((num_steps, batch)) < 0.2
    truncated = (rng.random((num_steps, batch)) < 0.2) & ~terminated
    q = learner.agent.q_values(params, obs)
    traj = types.Transition(
        obs=obs, action=rng.integers(0, 2, (num_steps, batch)).astype(np.int32),
        reward=rng.normal(size=(num_steps, batch)).astype(np.float32),
        terminated=terminated, truncated=truncated, next_obs=next_obs,
        behaviour_log_prob=np.zeros((num_steps, batch), np.float32),
        behaviour_dist=distributions.EpsGreedyParams(q, jnp.zeros((num_steps, batch))),
    )
    batch_out = jax.jit(learner.agent.actor_batch)(params, traj)
    want, want_returns = loop_priorities(
        lambda o: learner.agent.q_values(params, o), traj, learner.config.gamma, 3,
        learner.config.priority_eps,
    )
    np.testing.assert_allclose(batch_out.priorities, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch_out.items.reward, want_returns, rtol=1e-5, atol=1e-6)
    assert batch_out.items.obs.shape == (num_steps, batch, 4)


def _rows(state, seed=0):
    """Stored transitions as sorted rows (obs, action, return, discount, next_obs, priority)."""
    replay = jax.tree.map(lambda x: np.asarray(x[seed]), state.agent_state.replay)
    size_per_device = replay.size
    capacity = replay.storage.obs.shape[0] // len(size_per_device)
    leaves = replay.tree.reshape(len(size_per_device), -1)
    rows = []
    for d, size in enumerate(size_per_device):
        half = leaves.shape[1] // 2
        for i in range(size):
            j = d * capacity + i
            s = replay.storage
            rows.append(np.concatenate([
                s.obs[j], [s.action[j], s.reward[j], s.discount[j]], s.next_obs[j],
                [leaves[d, half + i]],
            ]))
    return np.array(sorted(rows, key=tuple))


def test_replay_shards_hold_the_same_transitions_on_one_and_two_devices():
    # 64 transitions per update; learning starts in update 1 (128 stored), after its
    # rollout, so the first two rollouts of both runs act with the initial parameters
    # and the union of the two shards must equal the single replay.
    _, _, one, _ = run(1, 2)
    _, _, two, _ = run(2, 6)
    assert one[1].agent_state.replay.size.tolist() == [[128]]
    assert two[1].agent_state.replay.size.tolist() == [[64, 64]]
    # Priorities too after update 0 (no learning yet); after update 1 the learner has
    # re-prioritised different samples on one and on two devices, so transitions only.
    np.testing.assert_allclose(_rows(one[0]), _rows(two[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _rows(one[1])[:, :-1], _rows(two[1])[:, :-1], rtol=1e-5, atol=1e-6
    )


def test_initial_priorities_are_the_actors_td_errors_not_the_maximum():
    _, _, one, history = run(1, 2)
    rows = _rows(one[0])  # after update 0: nothing sampled yet
    alpha = SMALL_ALPHA
    priorities = rows[:, -1] ** (1 / alpha)
    assert float(history[0]["learner/ready"][0]) == 0
    assert len(np.unique(np.round(priorities, 5))) > 32  # one per transition, not a constant


def test_learner_on_two_devices_keeps_identical_params_and_refreshes_the_target():
    learner, state, _, history = run(2, 6)
    ready = [float(h["learner/ready"][0]) for h in history]
    assert ready == [0, 1, 1, 1, 1, 1]
    steps = learner.config.learner_steps
    assert int(state.agent_state.learner_steps[0]) == 5 * steps
    for leaf in jax.tree.leaves(state.params):
        shards = leaf.addressable_shards
        assert len(shards) == 2
        np.testing.assert_array_equal(np.asarray(shards[0].data), np.asarray(shards[1].data))
    # Period 4 with 2 learner steps per update: refreshed at the end of updates 2 and 4,
    # so after update 5 the target is the parameters after update 4.
    params_after_4 = jax.tree.map(lambda x: x[0], run(2, 6)[2][4].params)
    target = jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(
        state.agent_state.target_params))
    for a, b in zip(jax.tree.leaves(params_after_4), jax.tree.leaves(target), strict=True):
        np.testing.assert_array_equal(a, b)
    for h in history[1:]:
        assert np.isfinite(h["loss/td"]).all() and h["loss/td"][0] > 0


def test_priority_beta_reaches_its_end_value_at_the_last_update():
    # 64 transitions per update, learning from update 1 (128 stored) to update 5: β is
    # priority_beta at the first learning update and priority_beta_end at the last.
    learner = make(priority_beta=0.4, priority_beta_end=1.0)
    init_keys, train_keys = learner.seed_keys(0)
    state = learner.init(init_keys)
    step = learner.make_train_chunk(1)
    ready, betas = [], []
    for _ in range(learner.config.num_updates):
        state, metrics = step(state, train_keys)
        ready.append(float(metrics["learner/ready"][0]))
        betas.append(float(metrics["priority/beta"][0]))
    assert ready == [0, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(betas[1:], np.linspace(0.4, 1.0, 5), rtol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (dict(batch_size=30), "--batch_size must be divisible by the number of devices"),
    (dict(buffer_capacity=32), "--buffer_capacity must be >= num_envs * rollout_len"),
    (dict(learning_starts=4096), "--learning_starts must be <= --buffer_capacity"),
    (dict(n_step=0), "--n_step must be > 0, got 0"),
    (dict(epsilon=1.5), "--epsilon must be in"),
])
def test_bad_configs_name_the_flag(overrides, message):
    with pytest.raises(errors.ConfigError, match=re.escape(message)):
        make(4, **overrides)


def test_continuous_actions_are_refused():
    with pytest.raises(errors.ConfigError, match="discrete action space"):
        cfg = agents.default_config("apex", "Pendulum-v1", **SMALL)
        on_device.OnDeviceLearner(cfg, parallel.make_mesh(1))
