"""benchmark.py --sweep: its outputs and its bad inputs (the measurement itself is the
benchmark's; see README for the measured proxy)."""

import csv
import dataclasses

import pytest

from jaxrl_dist import agents
from tests import multiprocess as mp

BENCHMARK = mp.os.path.join(mp.ROOT, "experiments", "benchmark.py")


def test_sweep_writes_csv_markdown_and_png_with_scaling_efficiency(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(mp.os.path.join(mp.ROOT, "experiments"))
    import sweep

    config = agents.default_config("ppo", "CartPole-v1", num_envs=64)
    rows = [
        {"kind": "devices", "n": 1, "processes": 1, "devices": 1, "pinned_cores": "",
         "num_envs": 64, "sps": 1000, "compile_s": 1.0, "backend": "cpu", "device_kind": "cpu"},
        {"kind": "processes", "n": 1, "processes": 1, "devices": 1, "pinned_cores": 1,
         "num_envs": 64, "sps": 1000, "compile_s": 1.0, "backend": "cpu", "device_kind": "cpu"},
        {"kind": "processes", "n": 2, "processes": 2, "devices": 2, "pinned_cores": 2,
         "num_envs": 128, "sps": 1800, "compile_s": 1.0, "backend": "cpu", "device_kind": "cpu"},
        {"kind": "independent", "n": 2, "processes": 2, "devices": 2, "pinned_cores": 2,
         "num_envs": 128, "sps": 1900, "compile_s": 1.0, "backend": "cpu", "device_kind": "cpu"},
    ]
    for r in rows:
        r["efficiency"] = sweep.efficiency(rows, r)
        r["of_independent"] = sweep.of_independent(rows, r)
    assert [r["efficiency"] for r in rows] == [1.0, 1.0, 0.9, 0.95]
    assert [r["of_independent"] for r in rows] == ["", "", round(1800 / 1900, 3), ""]
    sweep.write_outputs(str(tmp_path), rows, dataclasses.replace(config))
    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["efficiency"] for t in table] == ["1.0", "1.0", "0.9", "0.95"]
    md = (tmp_path / "sweep.md").read_text()
    assert "| processes | 2 | 2 | 2 | 2 | 128 | 1,800 | 0.9 | 0.947 | 1.0 |" in md
    assert "| independent | 2 | 2 | 2 | 2 | 128 | 1,900 | 0.95 | - | 1.0 |" in md
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


SWEEP_BAD_INPUTS = [
    (["--sweep", "--sweep_processes=0"], "--sweep_processes must be integers >= 1"),
    (["--sweep", "--sweep_devices=a"], "--sweep_devices must be comma-separated integers >= 1"),
    (["--sweep", "--sweep_processes=64"],
     "--sweep_processes=64 with --sweep_pin needs that many cores"),
    (["--sweep", "--num_devices=2"], "--num_devices is set by --sweep"),
    (["--sweep", "--env=gymnasium:CartPole-v1"], "--sweep measures on-device envs"),
]


@pytest.mark.parametrize("args, message", SWEEP_BAD_INPUTS)
def test_sweep_bad_inputs(args, message):
    proc = mp.start(BENCHMARK, args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().startswith(f"error: {message}"), err
