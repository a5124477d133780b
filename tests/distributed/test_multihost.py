"""Several processes through jax.distributed (gloo on CPU), on localhost.

A 2-process run (one CPU device each) must compute what 1 process with 2
devices computes for the same global batch: the mesh spans both processes and
gradients are all-reduced across them.
"""

import json
import shutil
import time

import numpy as np
import pytest

from tests import multiprocess as mp

ARGS = ["--total_steps=12288", "--num_envs=8", "--rollout_len=64", "--eval_episodes=2",
        "--log_points=3", "--compilation_cache="]


def last_line(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def logged(records):
    skip = {"wall_s", "sps", "init_s", "compile_s", "train_s"}
    return [{k: v for k, v in r.items() if k not in skip} for r in records]


@pytest.mark.parametrize("agent", ["ppo", pytest.param("apex", marks=pytest.mark.slow)])
def test_two_processes_equal_one_process_with_two_devices(tmp_path, agent):
    args = [*ARGS, f"--agent={agent}"]
    if agent == "apex":
        args += ["--buffer_capacity=4096", "--batch_size=32", "--learning_starts=256",
                 "--rollout_len=8", "--num_envs=16", "--total_steps=4096"]
        args = [a for a in args if not a.startswith(("--rollout_len=64", "--num_envs=8",
                                                     "--total_steps=12288"))]
    procs = mp.start_processes(mp.TRAIN, [*args, f"--workdir={tmp_path / 'two'}"], 2)
    single = mp.start(mp.TRAIN, [*args, f"--workdir={tmp_path / 'one'}"], devices=2)
    results = mp.wait_all([*procs, single])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    two, one = last_line(tmp_path / "two"), last_line(tmp_path / "one")
    assert two[-1]["params_sha256"] == one[-1]["params_sha256"]
    for a, b in zip(logged(two), logged(one), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], str):
                assert a[k] == b[k], k
            else:
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6, nan_ok=True), k
    # Only process 0 printed progress and wrote the outputs.
    assert "env_steps" in results[0][1] and "env_steps" not in results[1][1]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["num_processes"] == 2 and config["num_devices_used"] == 2


HOST_ARGS = ["--env=gymnasium:CartPole-v1", "--agent=ppo", "--actor_threads=2",
             "--envs_per_thread=4", "--rollout_len=16", "--total_steps=1024",
             "--num_minibatches=2", "--num_epochs=2", "--deterministic", "--eval_episodes=1",
             "--log_points=2", "--checkpoint_every=2", "--compilation_cache="]


def test_host_actors_two_processes_equal_one_process_with_two_devices(tmp_path):
    """Host actors: each process's 2 threads act on its device and its learner shard
    joins a mesh over both processes; 1 process runs the same 4 threads on 2 devices."""
    from jaxrl_dist.run import checkpoint

    procs = mp.start_processes(mp.TRAIN, [*HOST_ARGS, "--actor_devices=0",
                                          "--learner_devices=0", f"--workdir={tmp_path / 'two'}"],
                               2)
    single = mp.start(mp.TRAIN, [*HOST_ARGS, "--actor_devices=0,1", "--learner_devices=0,1",
                                 f"--workdir={tmp_path / 'one'}"], devices=2)
    results = mp.wait_all([*procs, single])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    two, one = last_line(tmp_path / "two"), last_line(tmp_path / "one")
    # Replicated parameters are the same bits in both processes (train_host checks the
    # hash across processes and raises otherwise); against one process the envs sit on
    # other learner devices, so sums run in another order: equal within rounding.
    params_two = checkpoint.load_params(str(tmp_path / "two" / "checkpoint"))
    params_one = checkpoint.load_params(str(tmp_path / "one" / "checkpoint"))
    for a, b in zip(mp.leaves(params_two), mp.leaves(params_one), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(mp.leaves(params_two)[0], 0)
    assert len(two) == len(one) == 3  # 2 log points + the summary
    for a, b in zip(two[:-1], one[:-1], strict=True):
        for k in ("env_steps", "train/episodes", "policy_lag/mean",
                  "train/episode_return", "loss/total", "opt/grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    assert two[-1]["env_steps"] == one[-1]["env_steps"] == 1024
    assert "env_steps" in results[0][1] and "env_steps" not in results[1][1]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["num_processes"] == 2 and config["num_envs"] == 16

    # Resumed in 2 processes from the checkpoint at update 2 (each process's actor
    # threads from their own states): the same bits as the uninterrupted 2-process run.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "two", cut)
    shutil.rmtree(cut / "checkpoints" / "4")
    procs = mp.start_processes(mp.TRAIN, [*HOST_ARGS, "--actor_devices=0", "--learner_devices=0",
                                          f"--workdir={cut}", "--resume"], 2)
    results = mp.wait_all(procs)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "resumed at update 2" in results[0][1]
    assert last_line(cut)[-1]["params_sha256"] == two[-1]["params_sha256"]


def test_a_dead_peer_stops_the_other_process_with_an_error(tmp_path):
    args = [*ARGS, "--total_steps=2000000", "--log_points=200", "--checkpoint_every=1000000",
            "--heartbeat_timeout_s=10", f"--workdir={tmp_path / 'run'}"]
    procs = mp.start_processes(mp.TRAIN, args, 2)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert time.time() < deadline and procs[0].poll() is None, procs[0].stderr.read()
        time.sleep(0.2)
    procs[1].kill()
    killed_at = time.time()
    try:
        _, err = procs[0].communicate(timeout=90)
    except Exception:
        procs[0].kill()
        raise
    assert procs[0].returncode != 0
    assert time.time() - killed_at < 90
    # JAX's coordination service aborts the survivor ("... detected fatal errors. This most
    # likely indicates that another task died"), or a collective fails first with an error.
    assert "fatal errors" in err or "error" in err.lower(), err[-2000:]


MULTIPROCESS_BAD_INPUTS = [
    (["--num_processes=2", "--coordinator_address=localhost"],
     "--coordinator_address must be host:port with --num_processes=2, got 'localhost'"),
    (["--num_processes=2", "--coordinator_address=localhost:1", "--process_id=2"],
     "--process_id must be in 0..1, got 2"),
    (["--num_processes=0"], "--num_processes must be >= 1, got 0"),
    (["--process_id=1"], "--coordinator_address and --process_id need --num_processes > 1"),
    (["--cluster_detection", "--num_processes=2"],
     "--cluster_detection takes the layout from the cluster"),
    (["--heartbeat_timeout_s=0"], "--heartbeat_timeout_s must be >= 1, got 0"),
]


@pytest.mark.parametrize("args, message", MULTIPROCESS_BAD_INPUTS)
def test_multi_process_bad_inputs_fail_before_joining(args, message, tmp_path):
    proc = mp.start(mp.TRAIN, [*args, f"--workdir={tmp_path}"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().startswith(f"error: {message}"), err
    assert not any(tmp_path.iterdir())
