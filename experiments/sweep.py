"""Throughput across devices and processes (``benchmark.py --sweep``).

Runs ``benchmark.py`` as child processes and reports env steps/s (after
compilation) with the scaling efficiency ``SPS(n) / (n * SPS(1))``:

* devices: one process over ``n`` devices (``--num_devices=n``; on CPU the
  child gets ``n`` virtual host devices), ``n`` in ``--sweep_devices``;
* processes: ``p`` processes joined by ``jax.distributed`` (one device each),
  ``p`` in ``--sweep_processes``; with ``--sweep_pin`` process ``i`` is pinned
  to CPU core ``i`` (the 2-core proxy: 2 processes on one core each against 1
  process on one core);
* independent (``--sweep_independent``): ``p`` single-process runs at once,
  not connected, pinned the same way; their summed sps is what the machine
  allows with no communication at all (cores share caches, memory bandwidth and
  clock), so ``processes / independent`` isolates the cost of the all-reduces.

Scaling is weak: ``--num_envs`` and ``--total_steps`` are per device (per
process), so ``n`` devices step ``n`` times as many environments for as many
updates. Writes ``sweep.csv``, ``sweep.md`` and
``sweep.png`` into ``--sweep_out``.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time

from absl import flags

from jaxrl_dist import errors

flags.DEFINE_bool("sweep", False, "Measure sps over --sweep_devices and --sweep_processes.")
flags.DEFINE_list("sweep_devices", ["1"], "Sweep: device counts of one process ('': none).")
flags.DEFINE_list("sweep_processes", ["1", "2"], "Sweep: process counts (one device each).")
flags.DEFINE_bool("sweep_pin", True, "Sweep: pin process i of a multi-process run to core i.")
flags.DEFINE_bool(
    "sweep_independent", True,
    "Sweep: for each process count p > 1 also run p unconnected single-process benchmarks "
    "at once (pinned like the process rows): the machine's ceiling with no communication.",
)
flags.DEFINE_string("sweep_out", None, "Sweep: output directory (default runs/sweep-<time>).")
FLAGS = flags.FLAGS

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark.py")
# Flags the sweep passes to each child itself.
SWEEP_OWN = (
    "sweep", "sweep_devices", "sweep_processes", "sweep_pin", "sweep_independent",
    "sweep_out", "num_envs",
    "total_steps", "num_devices", "coordinator_address", "num_processes", "process_id",
)


def _counts(name: str) -> list[int]:
    try:
        values = sorted({int(v) for v in FLAGS[name].value})
    except ValueError:
        raise errors.ConfigError(
            f"--{name} must be comma-separated integers >= 1, got {','.join(FLAGS[name].value)}"
        ) from None
    if values and values[0] < 1:
        raise errors.ConfigError(f"--{name} must be integers >= 1, got {values}")
    return values


def check_flags() -> tuple[list[int], list[int]]:
    """``(device counts, process counts)``; raises ConfigError for bad sweep flags."""
    devices, processes = _counts("sweep_devices"), _counts("sweep_processes")
    if not devices and not processes:
        raise errors.ConfigError("--sweep_devices and --sweep_processes are both empty")
    if FLAGS.num_devices is not None:
        raise errors.ConfigError("--num_devices is set by --sweep (see --sweep_devices)")
    if FLAGS.sweep_pin and max(processes) > (os.cpu_count() or 1):
        raise errors.ConfigError(
            f"--sweep_processes={max(processes)} with --sweep_pin needs that many cores, "
            f"this machine has {os.cpu_count()}"
        )
    if FLAGS.env.startswith("gymnasium:"):
        raise errors.ConfigError("--sweep measures on-device envs (gymnax), not --env=gymnasium:")
    return devices, processes


def given_flags(exclude: tuple[str, ...]) -> list[str]:
    """This invocation's flags as the user gave them (``--name=value``), less ``exclude``."""
    args = []
    for name in flags.FLAGS:
        if FLAGS[name].present and name not in exclude and FLAGS[name].value is not None:
            value = FLAGS[name].value
            value = ",".join(value) if isinstance(value, list) else value
            args.append(f"--{name}={value}")
    return args


def _child_args(num_envs: int, total_steps: int) -> list[str]:
    return [f"--num_envs={num_envs}", f"--total_steps={total_steps}", *given_flags(SWEEP_OWN)]


def pinned(argv: list[str], core: int) -> list[str]:
    """``argv`` (``[executable, *args]``) to run pinned to CPU ``core``: a launcher pins
    itself, then execs ``argv``, so every thread of the child starts on that core. (Not a
    ``preexec_fn``: the caller runs jax's threads, and a Python callback between fork and
    exec can then deadlock.)"""
    code = (f"import os, sys; os.sched_setaffinity(0, {{{int(core)}}}); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", code, *argv]


def _run(
    args: list[str], num_processes: int, local_devices: int, pin: bool, connected: bool = True
) -> list[dict]:
    """Runs ``num_processes`` benchmark children at once; their result lines (process 0
    first). ``connected``: joined by ``jax.distributed`` (else independent runs)."""
    # The caller's XLA_FLAGS are kept; the sweep's device count comes last and wins.
    count = f"--xla_force_host_platform_device_count={local_devices}"
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {count}".strip())
    procs = []
    if num_processes > 1:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
    for i in range(num_processes):
        extra = [] if num_processes == 1 or not connected else [
            f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
            f"--process_id={i}",
        ]
        argv = [sys.executable, SCRIPT, *args, *extra]
        procs.append(subprocess.Popen(
            pinned(argv, i) if pin else argv, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        ))
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"benchmark child failed ({p.returncode}): {err[-2000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs if out.strip()]


def run_sweep(config) -> list[dict]:
    """Measures every point of the sweep and writes CSV, markdown and PNG; returns the rows."""
    devices, processes = check_flags()
    out = FLAGS.sweep_out or os.path.join("runs", f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    per = config.num_envs
    points = [("devices", n, 1, n) for n in devices]
    points += [("processes", p, p, 1) for p in processes]
    if FLAGS.sweep_independent:
        points += [("independent", p, p, 1) for p in processes if p > 1]
    rows = []
    for kind, n, num_processes, local_devices in points:
        pin = FLAGS.sweep_pin and kind != "devices"
        if kind == "independent":  # each child: one process's share, alone
            results = _run(_child_args(per, config.total_steps), n, 1, pin, connected=False)
            result = dict(results[0], sps=sum(r["sps"] for r in results),
                          compile_s=max(r["compile_s"] for r in results))
        else:
            args = _child_args(per * n, config.total_steps * n)
            if kind == "devices":
                args.append(f"--num_devices={n}")
            result = _run(args, num_processes, local_devices, pin)[0]
        rows.append({
            "kind": kind, "n": n, "processes": num_processes,
            "devices": n if kind == "independent" else result["num_devices"],
            "pinned_cores": n if pin else "",
            "num_envs": per * n, "sps": result["sps"], "compile_s": result["compile_s"],
            "backend": result["backend"], "device_kind": result["device_kind"],
        })
        print(f"{kind:>9} n={n}: {result['sps']:>10,} sps (compile {result['compile_s']} s)",
              flush=True)
    for r in rows:
        r["efficiency"] = efficiency(rows, r)
        r["of_independent"] = of_independent(rows, r)
    write_outputs(out, rows, config)
    return rows


def efficiency(rows: list[dict], row: dict) -> float | str:
    """``SPS(n) / (n * SPS(1))`` against the ``n = 1`` row of the same kind ('' if none);
    independent runs against the one-process row."""
    kind = "processes" if row["kind"] == "independent" else row["kind"]
    base = [r for r in rows if r["kind"] == kind and r["n"] == 1]
    return round(row["sps"] / (row["n"] * base[0]["sps"]), 3) if base else ""


def of_independent(rows: list[dict], row: dict) -> float | str:
    """A process row's sps over that of as many independent runs ('' if none): the share
    of the machine's no-communication ceiling that the connected run reaches."""
    base = [r for r in rows if r["kind"] == "independent" and r["n"] == row["n"]]
    return round(row["sps"] / base[0]["sps"], 3) if base and row["kind"] == "processes" else ""


def write_outputs(out: str, rows: list[dict], config) -> None:
    with open(os.path.join(out, "sweep.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"{config.agent} on {config.env}: {config.num_envs} envs per device x "
        f"{config.rollout_len} steps, {config.total_steps:,} env steps per device, "
        f"({rows[0]['backend']}, {rows[0]['device_kind']}, {os.cpu_count()} cores)",
        "",
        "| scaling over | n | processes | devices | pinned cores | envs | env steps/s | "
        "efficiency SPS(n)/(n·SPS(1)) | of independent | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['n']} | {r['processes']} | {r['devices']} | "
            f"{r['pinned_cores'] or '-'} | {r['num_envs']} | {r['sps']:,} | {r['efficiency']} | "
            f"{r.get('of_independent', '') or '-'} | {r['compile_s']} |"
        )
    with open(os.path.join(out, "sweep.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_sps, ax_eff) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("devices", "o"), ("processes", "s"), ("independent", "^")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        ns = [r["n"] for r in sel]
        label = "independent runs" if kind == "independent" else f"over {kind}"
        ax_sps.plot(ns, [r["sps"] for r in sel], marker=marker, label=label)
        if kind != "independent":
            ax_sps.plot(ns, [n * sel[0]["sps"] / sel[0]["n"] for n in ns], ls=":", color="gray")
        ax_eff.plot(ns, [r["efficiency"] for r in sel], marker=marker, label=label)
    ax_sps.set_xlabel("n (devices or processes)")
    ax_sps.set_ylabel("env steps / s (after compile)")
    ax_sps.set_title("throughput (dotted: linear)")
    ax_eff.axhline(0.85, ls="--", color="red", label="0.85")
    ax_eff.set_ylim(0, 1.2)
    ax_eff.set_xlabel("n (devices or processes)")
    ax_eff.set_ylabel("SPS(n) / (n SPS(1))")
    ax_eff.set_title("scaling efficiency")
    for ax in (ax_sps, ax_eff):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{config.agent} on {config.env}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=100)
    plt.close(fig)
    print(f"wrote sweep.csv, sweep.md, sweep.png to {out}")
