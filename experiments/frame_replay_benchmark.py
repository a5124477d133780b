"""Ape-X's replay for Atari observations: plain (``replay.prioritized``) against frames stored
once (``replay.frame_stack``): bytes per transition, the largest capacity in a memory budget,
and add / sample throughput.

    python experiments/frame_replay_benchmark.py                    # 84x84x4, 24 GiB
    python experiments/frame_replay_benchmark.py --capacity=20000 --out=/tmp/frames.json

Memory. Each replay's state for ``--item_capacity`` transitions of Ape-X's item (obs and
next_obs uint8 ``[84, 84, 4]``, action int32, n-step return and discount float32) is
built with ``jax.eval_shape`` (nothing allocated) and its arrays' bytes summed (the
frame ring, the per-transition table of frame slots or observations, the sum-tree, the
bookkeeping); bytes per transition = that sum / capacity. The largest capacity that fits
in ``--budget_gib`` is found by bisection on the same sum (the replay's arrays alone: the
network, optimizer state and the rollouts in flight come on top). The frame replay is
sized for adds of ``--steps × --envs`` transitions (Ape-X's ``rollout_len`` × envs per
device) with the default slack (``--frame_replay_slack``).

Throughput. Both replays are filled with ``--capacity`` transitions of stacked random
frames (episodes of 200-2000 steps, zero-padded at reset), then timed, jitted with the
state donated and one call per op from Python (``block_until_ready``): add (``steps ×
envs`` transitions, the frame replay's includes finding the distinct frames), sample
(``--batch_size``, returning the items; the frame replay's includes rebuilding obs and
next_obs). Median of
``--repeats`` runs of ``--iters`` calls.
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, __file__.rsplit("/", 2)[0])  # the repository, when run as a script

from jaxrl_dist.agents.apex import agent as apex  # noqa: E402
from jaxrl_dist.replay import frame_stack, prioritized  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("item_capacity", 1_000_000, "Capacity for the bytes per transition.")
flags.DEFINE_float("budget_gib", 24.0, "Memory budget for the largest capacity (GiB).")
flags.DEFINE_integer("steps", 4, "Transitions per env per add (Ape-X's rollout_len).")
flags.DEFINE_integer("envs", 64, "Envs per add (per device).")
flags.DEFINE_integer("capacity", 20_000, "Capacity of the timed replays.")
flags.DEFINE_integer("batch_size", 512, "Transitions per sample.")
flags.DEFINE_integer("iters", 20, "Calls per timed run.")
flags.DEFINE_integer("repeats", 3, "Timed runs per op (the median is reported).")
flags.DEFINE_string("out", "", "Also write the JSON here.")

FRAME = (84, 84)
STACK = 4


def example_item():
    obs = jnp.zeros((*FRAME, STACK), jnp.uint8)
    zero = jnp.zeros((), jnp.float32)
    return apex.ReplayItem(obs, jnp.zeros((), jnp.int32), zero, zero, obs)


def make(kind, capacity):
    """``(init, add, sample)`` of a replay kind, ``init`` a thunk."""
    if kind == "plain":
        flat = lambda b: jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), b)
        return (lambda: prioritized.init(example_item(), capacity),
                lambda s, items, p: prioritized.add(s, flat(items), flat(p), 0.6),
                prioritized.sample)
    return (lambda: frame_stack.init(example_item(), capacity, FLAGS.steps, FLAGS.envs),
            lambda s, items, p: frame_stack.add(s, items, p, 0.6), frame_stack.sample)


def state_bytes(kind, capacity):
    return frame_stack.nbytes(jax.eval_shape(make(kind, capacity)[0]))


def largest_capacity(kind, budget):
    """The largest capacity (a multiple of steps × envs) whose state fits ``budget`` bytes."""
    step = FLAGS.steps * FLAGS.envs
    low, high = 1, 1
    while state_bytes(kind, high * step) <= budget:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if state_bytes(kind, mid * step) <= budget else (low, mid)
    return low * step


def rollouts(num, seed=0):
    """``num`` consecutive adds ``[T, B]`` of stacked random frames (numpy)."""
    rng = np.random.default_rng(seed)
    steps, envs = FLAGS.steps, FLAGS.envs
    stacks = rng.integers(0, 256, (envs, *FRAME, STACK), dtype=np.uint8)
    left = rng.integers(200, 2000, envs)
    adds = []
    for _ in range(num):
        obs, nxt = [], []
        for _ in range(steps):
            new = rng.integers(0, 256, (envs, *FRAME, 1), dtype=np.uint8)
            after = np.concatenate([stacks[..., 1:], new], axis=-1)
            obs.append(stacks)
            nxt.append(after)
            left -= 1
            reset = np.zeros_like(after)
            reset[..., -1] = rng.integers(0, 256, (envs, *FRAME), dtype=np.uint8)
            stacks = np.where((left == 0)[:, None, None, None], reset, after)
            left = np.where(left == 0, rng.integers(200, 2000, envs), left)
        zero = np.zeros((steps, envs), np.float32)
        adds.append(apex.ReplayItem(np.stack(obs), zero.astype(np.int32), zero, zero,
                                    np.stack(nxt)))
    return adds


def timed(fn, state, args_list):
    """Median seconds per call of ``state = fn(state, *args)`` over the runs, and the
    last state."""
    state = fn(state, *args_list[0])
    jax.block_until_ready(state)
    runs = []
    for r in range(FLAGS.repeats):
        start = time.perf_counter()
        for i in range(FLAGS.iters):
            state = fn(state, *args_list[(r * FLAGS.iters + i) % len(args_list)])
        jax.block_until_ready(state)
        runs.append((time.perf_counter() - start) / FLAGS.iters)
    return statistics.median(runs), state


def throughput(kind, adds):
    init, add_fn, sample_fn = make(kind, FLAGS.capacity)
    priorities = jnp.ones((FLAGS.steps, FLAGS.envs))
    add = jax.jit(lambda s, items: add_fn(s, items, priorities), donate_argnums=0)
    state = init()
    fills = -(-FLAGS.capacity // (FLAGS.steps * FLAGS.envs))
    for i in range(fills):
        state = add(state, adds[i % len(adds)])
    add_s, state = timed(add, state, [(a,) for a in adds])
    # The sampled batch is returned (written out whole: the gathers cannot be skipped);
    # calls run in order, so blocking on the last one's output waits for all.
    draw = jax.jit(lambda s, key: sample_fn(s, key, FLAGS.batch_size, 0.4).items)
    keys = [(jax.random.key(i),) for i in range(8)]
    sample_s, _ = timed(lambda _, key: draw(state, key), None, keys)
    return {"add_per_s": 1 / add_s, "sample_per_s": 1 / sample_s,
            "add_transitions_per_s": FLAGS.steps * FLAGS.envs / add_s,
            "sample_transitions_per_s": FLAGS.batch_size / sample_s}


def main(_):
    budget = int(FLAGS.budget_gib * 2**30)
    result = {"frame": [*FRAME, STACK], "steps": FLAGS.steps, "envs": FLAGS.envs,
              "item_capacity": FLAGS.item_capacity, "budget_gib": FLAGS.budget_gib}
    adds = rollouts(8)
    print("| replay | bytes / transition | largest capacity in "
          f"{FLAGS.budget_gib:g} GiB | add {FLAGS.steps}x{FLAGS.envs} /s | "
          f"sample {FLAGS.batch_size} /s |\n|---|---|---|---|---|")
    for kind in ("plain", "frames"):
        row = {"bytes_per_transition": state_bytes(kind, FLAGS.item_capacity)
               / FLAGS.item_capacity, "largest_capacity": largest_capacity(kind, budget),
               **throughput(kind, adds)}
        result[kind] = row
        print(f"| {kind} | {row['bytes_per_transition']:,.0f} | "
              f"{row['largest_capacity']:,} | {row['add_per_s']:,.0f} | "
              f"{row['sample_per_s']:,.0f} |")
    print(json.dumps(result))
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
