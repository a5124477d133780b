"""Prioritized replay throughput: ours (jaxrl_dist.replay) against flashbax, same sizes.

    python experiments/replay_benchmark.py                        # 1e6 MinAtar transitions
    python experiments/replay_benchmark.py --item=cartpole --out=/tmp/replay.json
    python experiments/replay_benchmark.py --loop=host            # one dispatch per op
    pip install -e ".[bench]"                                     # flashbax==0.1.3

What is measured. Both buffers are filled to ``--capacity`` items (timed apart, as
fill_s), then each operation is timed on the full buffer:

* add: ``--add_batch`` items per call (ours: ``prioritized.add`` with given priorities;
  flashbax: ``buffer.add``, which gives new items its max recorded priority);
* sample: ``--batch_size`` items per call (ours: ``prioritized.sample``, which also
  computes importance weights; flashbax: ``buffer.sample``);
* update: ``--batch_size`` priorities per call at random indices (ours:
  ``prioritized.update_priorities``; flashbax: ``buffer.set_priorities``);
* learner step: sample, then set new priorities of the sampled indices.

Item (``--item``): a transition ``obs, action (int32), reward, discount (float32),
next_obs``; minatar: obs uint8 [10, 10, 4] (812 bytes), cartpole: obs float32 [4].
flashbax's flat buffer stores time steps and samples consecutive pairs (first,
second); with ``--flashbax_item=timestep`` (default, as its docs use it) it stores
``obs, action, reward, discount`` and next_obs is ``second.obs``, so a sample carries
the same data as ours from half the observation memory; with ``transition`` it stores
our item (and a sample returns two of them).

How. Every op runs jitted with the buffer state donated (updated in place, no copy
per call). ``--loop=device`` (default): ``--iters`` calls inside one
``jax.lax.fori_loop`` per timed run, as a fused learner runs them; ``--loop=host``:
one jitted call per op from a Python loop (includes dispatch). Sampled items are
summed into a checksum so that the gathers cannot be optimised away (the same bytes
for both buffers; twice as many for flashbax with ``--flashbax_item=transition``).
Random indices and priorities are drawn before timing. Both buffers stay in memory;
each op is compiled ahead of time (compile_s), run once as warm-up, then timed
``--repeats`` times (block_until_ready), alternating between the buffers so that
load bursts on a noisy machine hit both; the median run is reported (the best one
too, in the ratio table and the JSON).

Units: ops/s = calls per second; items/s = ops/s x items per call (add_batch for
add, batch_size otherwise); ms/op = 1000 / ops/s; compile_s in seconds. After the
timing, ``--check_draws`` batches are sampled from each buffer and the draws of an
item with zero priority are counted (a drifting sum-tree returns some).

Prints markdown tables, the peak RSS of the process (ru_maxrss, all buffers live;
``--buffers=ours`` for one alone), then one JSON line; ``--out`` also writes the JSON.
"""

import json
import os
import platform
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxrl_dist import cli
from jaxrl_dist.replay import prioritized

INSTALL_HINT = 'pip install -e ".[bench]"  (flashbax==0.1.3)'
ITEMS = {"minatar": ((10, 10, 4), np.uint8), "cartpole": ((4,), np.float32)}
OPS = ("add", "sample", "update", "learner_step")

cli.DEFINE_integer("capacity", 1_000_000, "Buffer capacity (items).")
cli.DEFINE_integer("batch_size", 512, "Items per sample / priority update.")
cli.DEFINE_integer("add_batch", 512, "Items per add call.")
flags.DEFINE_enum("item", "minatar", list(ITEMS), "Transition shape.")
flags.DEFINE_enum("flashbax_item", "timestep", ["timestep", "transition"],
                  "What flashbax's flat buffer stores (see the module docstring).")
flags.DEFINE_enum("loop", "device", ["device", "host"],
                  "device: calls inside one fori_loop; host: one jitted call per op.")
flags.DEFINE_list("buffers", ["ours", "flashbax"], "Buffers to measure.")
cli.DEFINE_integer("iters", 1000, "Calls per timed run.")
cli.DEFINE_integer("repeats", 5, "Timed runs per op (median reported).")
cli.DEFINE_integer("check_draws", 200, "Batches sampled to count zero-priority draws.")
flags.DEFINE_float("alpha", 0.6, "Priority exponent.")
flags.DEFINE_float("beta", 0.4, "Importance-sampling exponent (ours only).")
cli.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("out", None, "Write the JSON result here.")
FLAGS = flags.FLAGS


class Config(NamedTuple):
    capacity: int = 1_000_000
    batch_size: int = 512
    add_batch: int = 512
    item: str = "minatar"
    flashbax_item: str = "timestep"
    loop: str = "device"
    iters: int = 1000
    repeats: int = 5
    check_draws: int = 200
    alpha: float = 0.6
    beta: float = 0.4
    seed: int = 0


class Adapter(NamedTuple):
    """One buffer behind a common interface; ``sample`` returns (indices, items, probs)."""

    name: str
    num_slots: int  # sampleable item indices are in [0, num_slots)
    init: Callable[[], Any]
    add: Callable[[Any, Any, jax.Array], Any]
    sample: Callable[[Any, jax.Array], tuple]
    update: Callable[[Any, jax.Array, jax.Array], Any]


def example_item(item: str) -> dict:
    shape, dtype = ITEMS[item]
    return {
        "obs": np.zeros(shape, dtype), "action": np.int32(0), "reward": np.float32(0),
        "discount": np.float32(0), "next_obs": np.zeros(shape, dtype),
    }


def random_items(item: str, num: int, rng: np.random.Generator) -> dict:
    """``num`` random transitions (leaves ``[num, ...]``)."""
    shape, dtype = ITEMS[item]
    obs = lambda: (rng.integers(0, 2, (num, *shape)) if dtype == np.uint8
                   else rng.standard_normal((num, *shape))).astype(dtype)
    return {
        "obs": obs(), "action": rng.integers(0, 4, num).astype(np.int32),
        "reward": rng.standard_normal(num).astype(np.float32),
        "discount": np.full(num, 0.99, np.float32), "next_obs": obs(),
    }


def ours(cfg: Config) -> Adapter:
    def sample(state, key):
        s = prioritized.sample(state, key, cfg.batch_size, cfg.beta)
        return s.indices, (s.items, s.weights), s.probabilities

    return Adapter(
        name="ours",
        num_slots=cfg.capacity,
        init=lambda: prioritized.init(example_item(cfg.item), cfg.capacity),
        add=lambda state, items, p: prioritized.add(state, items, p, cfg.alpha),
        sample=sample,
        update=lambda state, idx, p: prioritized.update_priorities(state, idx, p, cfg.alpha),
    )


def flashbax_adapter(cfg: Config) -> Adapter:
    """flashbax's prioritised flat buffer, used as its docs do (ImportError if absent)."""
    import flashbax  # No compatibility shim needed with jax 0.10.2.

    backend = jax.default_backend()
    with warnings.catch_warnings():  # "sample_sequence_length greater than min_length..."
        warnings.simplefilter("ignore", UserWarning)
        buffer = flashbax.make_prioritised_flat_buffer(
            max_length=cfg.capacity, min_length=cfg.batch_size,
            sample_batch_size=cfg.batch_size, add_sequences=False, add_batch_size=cfg.add_batch,
            priority_exponent=cfg.alpha, device=backend if backend in ("gpu", "tpu") else "cpu",
        )
    timestep = cfg.flashbax_item == "timestep"
    keep = (lambda x: {k: v for k, v in x.items() if k != "next_obs"}) if timestep else None

    def sample(state, key):
        s = buffer.sample(state, key)
        return s.indices, (s.experience.first, s.experience.second), s.probabilities

    return Adapter(
        name="flashbax",
        # The flat buffer keeps max_length // add_batch steps in each of add_batch rows.
        num_slots=cfg.capacity // cfg.add_batch * cfg.add_batch,
        init=lambda: buffer.init(keep(example_item(cfg.item)) if timestep
                                 else example_item(cfg.item)),
        add=lambda state, items, p: buffer.add(state, keep(items) if timestep else items),
        sample=sample,
        update=buffer.set_priorities,
    )


def checksum(tree) -> jax.Array:
    """Sum of every element of ``tree`` (float32): keeps sampled data from being dead code."""
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(tree))


def op_bodies(buf: Adapter) -> dict:
    """``body(i, (state, acc), consts) -> (state, acc)`` for each op; tables cycle on ``i``."""

    def row(table, i):
        return table[i % table.shape[0]]

    def add(i, carry, c):
        return buf.add(carry[0], c["items"], row(c["add_p"], i)), carry[1]

    def sample(i, carry, c):
        idx, items, probs = buf.sample(carry[0], jax.random.fold_in(c["key"], i))
        return carry[0], carry[1] + checksum((idx, items, probs))

    def update(i, carry, c):
        return buf.update(carry[0], row(c["upd_idx"], i), row(c["upd_p"], i)), carry[1]

    def learner_step(i, carry, c):
        idx, items, probs = buf.sample(carry[0], jax.random.fold_in(c["key"], i))
        state = buf.update(carry[0], idx, row(c["upd_p"], i))
        return state, carry[1] + checksum((items, probs))

    return {"add": add, "sample": sample, "update": update, "learner_step": learner_step}


def constants(buf: Adapter, cfg: Config) -> dict:
    """Inputs drawn before timing: add items/priorities, update indices/priorities, a key."""
    rng = np.random.default_rng(cfg.seed)
    rows = 64
    priority = lambda *shape: (rng.random(shape) + 1e-3).astype(np.float32)
    return jax.device_put({
        "items": random_items(cfg.item, cfg.add_batch, rng),
        "add_p": priority(rows, cfg.add_batch),
        # Uniform over all slots (flashbax's include the few whose time-step pair is broken).
        "upd_idx": rng.integers(0, buf.num_slots, (rows, cfg.batch_size)).astype(np.int32),
        "upd_p": priority(rows, cfg.batch_size),
        "key": jax.random.key(cfg.seed),
    })


def compile_loop(body, carry, consts, loop: str):
    """(compiled fn, compile seconds). device: ``fn(carry, consts, n)`` runs ``n`` calls in a
    fori_loop; host: ``fn(carry, consts, i)`` runs call ``i``. ``carry`` is donated."""
    if loop == "device":
        fn = lambda carry, c, n: jax.lax.fori_loop(0, n, lambda i, x: body(i, x, c), carry)
    else:
        fn = lambda carry, c, i: body(i, carry, c)
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=0).lower(carry, consts, jnp.int32(0)).compile()
    return compiled, time.perf_counter() - t0


def run_calls(compiled, carry, consts, loop: str, start: int, num: int):
    """Runs calls ``start .. start+num-1``; returns (carry, seconds)."""
    if loop == "device":
        n = jnp.int32(num)
        jax.block_until_ready((carry, consts, n))
        t0 = time.perf_counter()
        carry = jax.block_until_ready(compiled(carry, consts, n))
        return carry, time.perf_counter() - t0
    steps = [jnp.int32(i) for i in range(start, start + num)]
    jax.block_until_ready((carry, consts, steps))
    t0 = time.perf_counter()
    for i in steps:
        carry = compiled(carry, consts, i)
    carry = jax.block_until_ready(carry)
    return carry, time.perf_counter() - t0


def rates(runs: list, compile_s: float, cfg: Config, per_call: int) -> dict:
    ops = cfg.iters / statistics.median(runs)
    return {
        "ops_per_s": ops, "items_per_s": ops * per_call, "ms_per_op": 1e3 / ops,
        "compile_s": compile_s, "best_ops_per_s": cfg.iters / min(runs), "run_seconds": runs,
    }


class Live(NamedTuple):
    """A filled buffer under test; ``carry`` is replaced after every (donating) call."""

    buf: Adapter
    consts: dict
    carry: list  # [(state, checksum)]


def time_op(op: str, live: dict, cfg: Config) -> dict:
    """Compiles, warms up and times ``op`` on every buffer, alternating buffers between the
    timed runs so that a burst of load on a noisy machine hits all of them alike."""
    compiled = {}
    for name, b in live.items():
        fn, compile_s = compile_loop(op_bodies(b.buf)[op], b.carry[0], b.consts, cfg.loop)
        b.carry[0], _ = run_calls(fn, b.carry[0], b.consts, cfg.loop, 0, 1)  # warm-up
        compiled[name] = (fn, compile_s, [])
    for r in range(cfg.repeats):
        for name, b in live.items():
            fn, _, runs = compiled[name]
            b.carry[0], seconds = run_calls(fn, b.carry[0], b.consts, cfg.loop,
                                            1 + r * cfg.iters, cfg.iters)
            runs.append(seconds)
    per_call = cfg.add_batch if op == "add" else cfg.batch_size
    return {name: rates(runs, compile_s, cfg, per_call)
            for name, (_, compile_s, runs) in compiled.items()}


def fill(buf: Adapter, consts: dict, cfg: Config):
    """A new buffer, filled with ``ceil(capacity / add_batch)`` adds in one fori_loop."""
    body = op_bodies(buf)["add"]
    carry = (buf.init(), jnp.zeros((), jnp.float32))
    compiled, _ = compile_loop(body, carry, consts, "device")
    num = -(-cfg.capacity // cfg.add_batch)
    carry, seconds = run_calls(compiled, carry, consts, "device", 0, num)
    return carry, seconds


def zero_priority_draws(buf: Adapter, state, cfg: Config) -> int:
    """How many of ``check_draws`` sampled batches' items have priority (probability) 0."""

    def count(state, key):
        def body(i, total):
            _, _, probs = buf.sample(state, jax.random.fold_in(key, i))
            return total + jnp.sum(probs <= 0.0)

        return jax.lax.fori_loop(0, cfg.check_draws, body, jnp.zeros((), jnp.int32))

    return int(jax.jit(count)(state, jax.random.key(cfg.seed + 1)))


def state_bytes(state) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(state))


def measure(bufs: list, cfg: Config) -> dict:
    """Fills every buffer, then times every op on all of them (all buffers stay in memory)."""
    live, results = {}, {}
    for buf in bufs:
        consts = constants(buf, cfg)
        carry, fill_s = fill(buf, consts, cfg)
        live[buf.name] = Live(buf, consts, [carry])
        results[buf.name] = {"slots": buf.num_slots, "state_mb": state_bytes(carry[0]) / 2**20,
                             "fill_s": fill_s, "ops": {}}
    for op in OPS:
        for name, r in time_op(op, live, cfg).items():
            results[name]["ops"][op] = r
    for name, b in live.items():
        if cfg.check_draws > 0:
            results[name]["zero_priority_draws"] = zero_priority_draws(b.buf, b.carry[0][0], cfg)
            results[name]["draws_checked"] = cfg.check_draws * cfg.batch_size
    return results


def run_benchmark(cfg: Config, buffers=("ours", "flashbax")) -> dict:
    """Measures each of ``buffers``; a missing flashbax gives ``{"skipped": reason}``."""
    bufs, skipped = [], {}
    for name in buffers:
        try:
            bufs.append(ours(cfg) if name == "ours" else flashbax_adapter(cfg))
        except ImportError as e:
            skipped[name] = {"skipped": f"{e}; install with: {INSTALL_HINT}"}
    results = measure(bufs, cfg) if bufs else {}
    return {name: results.get(name) or skipped[name] for name in buffers}


def machine() -> dict:
    return {
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def markdown(results: dict, cfg: Config) -> str:
    lines = [
        f"capacity {cfg.capacity:,}, batch {cfg.batch_size}, add batch {cfg.add_batch}, "
        f"item {cfg.item}, loop {cfg.loop}, {cfg.repeats} x {cfg.iters} calls (median)",
        "",
        "| buffer | op | ops/s | items/s | ms/op | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        if "skipped" in res:
            lines.append(f"| {name} | skipped: {res['skipped']} | | | | |")
            continue
        for op, r in res["ops"].items():
            lines.append(f"| {name} | {op} | {r['ops_per_s']:,.0f} | {r['items_per_s']:,.0f} "
                         f"| {r['ms_per_op']:.3f} | {r['compile_s']:.2f} |")
    lines += ["", "| buffer | slots | state MB | fill s | zero-priority draws |",
              "|---|---:|---:|---:|---:|"]
    for name, res in results.items():
        if "skipped" not in res:
            zero = (f"{res['zero_priority_draws']} / {res['draws_checked']:,}"
                    if "draws_checked" in res else "-")
            lines.append(f"| {name} | {res['slots']:,} | {res['state_mb']:.0f} "
                         f"| {res['fill_s']:.1f} | {zero} |")
    if all("ops" in results.get(name, {}) for name in ("ours", "flashbax")):
        lines += ["", "| op | ours / flashbax (ops/s, median) | same, best runs |",
                  "|---|---:|---:|"]
        for op in OPS:
            a, b = results["ours"]["ops"][op], results["flashbax"]["ops"][op]
            lines.append(f"| {op} | {a['ops_per_s'] / b['ops_per_s']:.2f} "
                         f"| {a['best_ops_per_s'] / b['best_ops_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    unknown = set(FLAGS.buffers) - {"ours", "flashbax"}
    if unknown:
        raise app.UsageError(f"--buffers: unknown {sorted(unknown)}; use ours, flashbax")
    cfg = Config(**{f: getattr(FLAGS, f) for f in Config._fields})
    results = run_benchmark(cfg, FLAGS.buffers)
    print(markdown(results, cfg))
    for name, res in results.items():
        if "skipped" in res:
            print(f"\n{name} was skipped: {res['skipped']}")
    out = {"config": cfg._asdict(), "results": results, **machine()}
    print(f"\npeak RSS of the process (all buffers live): {out['peak_rss_mb']:.0f} MB")
    print(json.dumps(out), flush=True)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    app.run(main)
