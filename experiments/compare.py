"""Paired throughput of this tree against another checkout (``benchmark.py --compare_with``).

    git worktree add /tmp/base HEAD~1
    python experiments/benchmark.py --compare_with=/tmp/base --compare_rounds=4

On a shared 2-core VM the same benchmark drifts by about ±15 % from run to run,
more than most changes are worth, so back-to-back runs of two versions cannot
tell them apart. Here each round runs ``benchmark.py`` of this tree and of the
other checkout *at the same time*, each pinned to its own CPU core, so both see
the same load on the machine; the cores swap every round, which cancels a
core's own bias. The other checkout's ``experiments/benchmark.py`` runs with
``PYTHONPATH=<dir>``, so it imports that checkout's ``jaxrl_dist`` (checked
before the first round) with this interpreter and its installed packages.

What it measures is one core's throughput (both children are pinned), which is
what a single-device CPU run of a small config uses anyway; each child compiles
on one core too, so ``compile_s`` is longer than in an unpinned run. Prints one
line per round and, as the last line, one JSON object: per-round ``sps`` and
``compile_s`` of both (``this``, ``other``), their ratios this / other, and the
mean, min and max of each ratio.
"""

import json
import os
import statistics
import subprocess
import sys

import sweep
from absl import flags

from jaxrl_dist import cli, errors

flags.DEFINE_string(
    "compare_with", None,
    "Directory of another jaxrl_dist checkout: benchmark it against this tree in paired "
    "rounds, both at once, one pinned core each (see experiments/compare.py).",
)
cli.DEFINE_integer("compare_rounds", 4, "--compare_with: paired rounds (cores swap each round).")
FLAGS = flags.FLAGS

THIS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags that are the comparison's own and not passed to the two benchmark children.
COMPARE_OWN = ("compare_with", "compare_rounds", "repeats")


def check_flags() -> str | None:
    """The other checkout's absolute path (None without ``--compare_with``).

    Raises:
      ConfigError: it is not a jaxrl_dist checkout, this machine has fewer than 2
        cores, ``--compare_rounds`` < 1, or ``--sweep``, ``--repeats`` or the
        multi-process flags are combined with it.
    """
    if FLAGS.compare_with is None:
        return None
    other = os.path.abspath(FLAGS.compare_with)
    if not (os.path.isfile(os.path.join(other, "experiments", "benchmark.py"))
            and os.path.isfile(os.path.join(other, "jaxrl_dist", "__init__.py"))):
        raise errors.ConfigError(
            f"--compare_with must be a jaxrl_dist checkout (with experiments/benchmark.py and "
            f"jaxrl_dist/), got {FLAGS.compare_with!r}"
        )
    if FLAGS.compare_rounds < 1:
        raise errors.ConfigError(f"--compare_rounds must be >= 1, got {FLAGS.compare_rounds}")
    if FLAGS.sweep or FLAGS.repeats != 1:
        raise errors.ConfigError("--compare_with does not combine with --sweep or --repeats")
    if FLAGS.num_processes != 1 or FLAGS.coordinator_address or FLAGS.cluster_detection:
        raise errors.ConfigError("--compare_with runs one process per version, not a "
                                 "multi-process run (--num_processes, --coordinator_address)")
    if len(os.sched_getaffinity(0)) < 2:
        raise errors.ConfigError("--compare_with pins each version to its own core: needs 2 cores")
    return other


def _env(root: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _check_imports(other: str) -> None:
    """Fails unless ``PYTHONPATH=other`` makes Python import the other checkout's package."""
    out = subprocess.run(
        [sys.executable, "-c",
         "import jaxrl_dist, os; print(os.path.abspath(jaxrl_dist.__file__))"],
        env=_env(other), cwd=other, capture_output=True, text=True, check=False,
    )
    want = os.path.join(other, "jaxrl_dist", "__init__.py")
    if out.returncode != 0 or os.path.realpath(out.stdout.strip()) != os.path.realpath(want):
        raise RuntimeError(
            f"PYTHONPATH={other} imports jaxrl_dist from {out.stdout.strip() or out.stderr[-500:]}"
            f", not from {want}"
        )


def _round(other: str, args: list[str], this_core: int, other_core: int) -> dict[str, dict]:
    core_ids = sorted(os.sched_getaffinity(0))
    procs = {}
    for name, root, core in (("this", None, this_core), ("other", other, other_core)):
        script = os.path.join(root or THIS_ROOT, "experiments", "benchmark.py")
        procs[name] = subprocess.Popen(
            sweep.pinned([sys.executable, script, *args], core_ids[core]), env=_env(root),
            cwd=root or THIS_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    outputs = {name: proc.communicate() for name, proc in procs.items()}  # both finish
    results = {}
    for name, (out, err) in outputs.items():
        if procs[name].returncode != 0:
            raise RuntimeError(
                f"the {name} benchmark failed ({procs[name].returncode}): {err[-2000:]}"
            )
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def summarize(rounds: list[dict]) -> dict:
    """Ratios this / other of ``sps`` and ``compile_s`` per round, with mean, min and max.

    Args:
      rounds: per round ``{"this": {"sps", "compile_s", ...}, "other": {...}}``.

    Returns:
      ``{"rounds": [...], "sps_ratio": {"per_round", "mean", "min", "max"},
      "compile_ratio": {...}}``; ``per_round`` lists are rounded to 3 digits.
    """
    table = []
    for i, r in enumerate(rounds):
        table.append({
            "round": i + 1, "this_core": r.get("this_core"), "other_core": r.get("other_core"),
            "this_sps": r["this"]["sps"], "other_sps": r["other"]["sps"],
            "this_compile_s": r["this"]["compile_s"], "other_compile_s": r["other"]["compile_s"],
        })

    def stats(key: str) -> dict:
        ratios = [t[f"this_{key}"] / t[f"other_{key}"] for t in table]
        return {
            "per_round": [round(x, 3) for x in ratios], "mean": round(statistics.mean(ratios), 3),
            "min": round(min(ratios), 3), "max": round(max(ratios), 3),
        }

    return {"rounds": table, "sps_ratio": stats("sps"), "compile_ratio": stats("compile_s")}


def run_compare(other: str) -> dict:
    """Runs ``--compare_rounds`` paired rounds against ``other``; prints and returns the summary."""
    _check_imports(other)
    args = sweep.given_flags(COMPARE_OWN)
    rounds = []
    for i in range(FLAGS.compare_rounds):
        this_core, other_core = (0, 1) if i % 2 == 0 else (1, 0)
        result = _round(other, args, this_core, other_core)
        result.update(this_core=this_core, other_core=other_core)
        rounds.append(result)
        print(
            f"round {i + 1}: this {result['this']['sps']:>9,} sps (core {this_core}, compile "
            f"{result['this']['compile_s']} s) | other {result['other']['sps']:>9,} sps "
            f"(core {other_core}, compile {result['other']['compile_s']} s) | "
            f"ratio {result['this']['sps'] / result['other']['sps']:.3f}",
            flush=True,
        )
    summary = dict(summarize(rounds), this=THIS_ROOT, other=other, args=args)
    print(json.dumps(summary), flush=True)
    return summary
