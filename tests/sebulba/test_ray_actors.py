"""Ray actor processes (``--ray_actors``): the same results as threads, learning, faults.

In-process tests share one local Ray instance (2 CPUs, started once for the module);
the learning runs (each starting its own local instance, as ``train.py`` does) run in
fresh processes in the background while the other tests run (conftest.BackgroundRuns).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.sebulba import ray_fleet
from jaxrl_dist.sebulba import training as host_training
from tests import processes
from tests.cli.test_cli import run_script, script_job

ray = pytest.importorskip("ray")  # the [ray] extra; README's test install includes it

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUIET = training.RunSettings(eval_episodes=2, log_points=4, progress_every_s=1e9)


@pytest.fixture(scope="module")
def ray_instance():
    with warnings.catch_warnings():  # Ray's fork + exec is safe after JAX's threads exist
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def small_config(agent, **overrides):
    values = dict(rollout_len=16, total_steps=6 * 16 * 8)
    if agent == "ppo":
        values.update(num_minibatches=2, num_epochs=2)
    if agent == "apex":
        values.update(learning_starts=256, batch_size=32)
    values.update(overrides)
    return agents.default_config(agent, "gymnasium:CartPole-v1", **values)


def run(config, workdir=None, *, settings=QUIET, **host):
    layout = host_training.HostSettings(**dict(dict(
        envs_per_thread=4, deterministic=True, learner_devices=(0,)), **host))
    return host_training.train_host(config, settings, layout, workdir, log=lambda s: None)


@pytest.mark.usefixtures("ray_instance")
@pytest.mark.parametrize("agent", ["ppo", "impala", "a2c", "apex"])
def test_ray_actors_compute_exactly_what_threads_compute(agent):
    """--deterministic: N Ray actor processes == N actor threads (params_sha256)."""
    config = small_config(agent)
    threads = run(config, actor_threads=2)
    actors = run(config, ray_actors=2)
    assert actors["params_sha256"] == threads["params_sha256"]
    assert actors["actor_env_steps"] >= actors["env_steps"]
    assert actors["actor_restarts"] == 0
    assert actors["policy_lag/max"] == 1


@pytest.mark.usefixtures("ray_instance")
def test_ray_run_interrupted_and_resumed_matches_an_uninterrupted_one(tmp_path):
    """8 updates of 2 actors x 4 envs x 16 steps, a checkpoint every 4; a Ctrl-C at
    update 6 (from the progress callback) keeps checkpoint 4; the run resumed from it
    (actors from their snapshots: keys and env states) ends bit for bit where the
    uninterrupted run ends."""
    config = small_config("ppo", total_steps=8 * 128)
    settings = dataclasses.replace(QUIET, checkpoint_every=4, log_points=4)
    full = run(config, ray_actors=2, settings=settings)

    def interrupt(env_steps, metrics):
        if env_steps >= 6 * 128:
            raise KeyboardInterrupt

    layout = host_training.HostSettings(envs_per_thread=4, deterministic=True,
                                        learner_devices=(0,), ray_actors=2)
    with pytest.raises(KeyboardInterrupt):
        host_training.train_host(config, settings, layout, str(tmp_path), log=lambda s: None,
                                 progress_fn=interrupt)
    resumed = run(config, str(tmp_path), settings=dataclasses.replace(settings, resume=True),
                  ray_actors=2)
    assert resumed["resumed_from"] == 4
    assert resumed["params_sha256"] == full["params_sha256"]


@pytest.mark.usefixtures("ray_instance")
def test_a_killed_actor_process_is_restarted_and_the_run_finishes(tmp_path):
    """SIGKILL of one of the run's actor processes at the first log point past 256 env
    steps: the fleet starts a new one, counts the restart, and the run takes every env
    step (the learning run with a kill: ``ppo_sigkill``, slow)."""
    config = small_config("ppo", total_steps=16 * 128)
    before = set(processes.ray_actor_processes(os.getpid()))
    killed = []

    def kill_one(env_steps, metrics):
        if not killed and env_steps >= 256:
            ours = [p for p in processes.ray_actor_processes(os.getpid()) if p not in before]
            os.kill(ours[0], signal.SIGKILL)
            killed.append(ours[0])

    layout = host_training.HostSettings(envs_per_thread=4, deterministic=True,
                                        learner_devices=(0,), ray_actors=2)
    summary = host_training.train_host(
        config, dataclasses.replace(QUIET, log_points=16), layout, str(tmp_path),
        log=lambda s: None, progress_fn=kill_one)
    assert len(killed) == 1
    assert summary["actor_restarts"] >= 1 and summary["env_steps"] == 16 * 128, summary
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("actor_restarts", 0) for r in records) >= 1


@pytest.mark.usefixtures("ray_instance")
def test_a3c_workers_send_gradients_the_server_applies_in_arrival_order(tmp_path):
    """2 Ray gradient workers x 4 envs, 60 gradients: every one applied (one update
    each), each one's staleness logged, some stale (the maths of both halves:
    tests/agents/test_a3c.py; that A3C solves CartPole: ``a3c`` below, slow)."""
    config = agents.default_config("a3c", "gymnasium:CartPole-v1", total_steps=60 * 4 * 5)
    settings = dataclasses.replace(QUIET, log_points=12)
    summary = run(config, str(tmp_path), settings=settings, ray_actors=2, deterministic=False)
    assert summary["env_steps"] == 60 * 4 * 5 and summary["actor_restarts"] == 0, summary
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "staleness/mean" in r]
    assert len(logged) >= 10, records[-1].keys()
    assert all(0 <= r["staleness/mean"] <= r["staleness/max"] for r in logged)
    assert max(r["staleness/max"] for r in logged) >= 1  # 2 workers: some are stale
    assert all(np.isfinite(r["loss/total"]) for r in logged)


def test_without_ray_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(errors.ConfigError, match=r'pip install -e "\.\[ray\]"'):
        run(small_config("ppo"), ray_actors=2)


def test_unreachable_ray_address_is_one_line_within_30_s(tmp_path):
    t0 = time.monotonic()
    result = run_script(
        "experiments/train.py", "--env=gymnasium:CartPole-v1", "--ray_actors=2",
        "--ray_address=127.0.0.1:9", f"--workdir={tmp_path / 'run'}", timeout=60,
    )
    assert time.monotonic() - t0 < 30
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ray_address=127.0.0.1:9" in lines[0], result.stderr


# ------------------------------------------------------------------ learning runs
# Each in a fresh process with its own local Ray instance (2 CPUs): host_training as
# train.py calls it; the summary on the last line. ``kill_at``: at the first log point
# past that many env steps, SIGKILL one actor process of this run's Ray instance.
RAY_LEARNING_MAIN = r"""
import json, os, signal, sys
from jaxrl_dist import agents
from jaxrl_dist.sebulba import training as host_training
from jaxrl_dist.anakin import training
from tests import processes
agent, actors, envs, deterministic, kill_at, workdir, overrides = json.loads(sys.argv[1])
host = host_training.HostSettings(ray_actors=actors, envs_per_thread=envs,
                                  deterministic=deterministic, learner_devices=(0,))
config = agents.default_config(agent, "gymnasium:CartPole-v1", **overrides)
killed = []

def progress(env_steps, metrics):
    if kill_at and not killed and env_steps >= kill_at:
        victim = processes.ray_actor_processes(os.getpid())[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

summary = host_training.train_host(
    config, training.RunSettings(eval_episodes=32, log_points=20), host, workdir,
    log=lambda s: None, progress_fn=progress,
)
print("SUMMARY " + json.dumps(dict(
    {k: summary[k] for k in ("env_steps", "eval/episode_return", "actor_restarts")},
    killed=len(killed))))
"""

# (agent, actors, envs per actor, deterministic, kill at env steps, overrides)
RAY_LEARNING = {
    "ppo": ("ppo", 2, 8, True, 0, dict(rollout_len=64, total_steps=500_000)),
    "ppo_sigkill": ("ppo", 2, 8, True, 100_000, dict(rollout_len=64, total_steps=500_000)),
    "apex": ("apex", 2, 16, True, 0, dict(rollout_len=8, learner_steps=8,
                                          total_steps=500_000)),
    # A3C's t_max = 5 (the default): t_max = 16 ended at 187.7 (CI) and 250.7.
    "a3c": ("a3c", 2, 16, False, 0, dict(total_steps=1_000_000)),
}


def background_runs(items, tmp_path_factory):
    names = [item.callspec.params["name"] for item in items
             if item.originalname == "test_ray_actors_solve_gymnasium_cartpole"]
    jobs = []
    for name in names:
        agent, actors, envs, deterministic, kill_at, overrides = RAY_LEARNING[name]
        workdir = str(tmp_path_factory.mktemp(f"ray_{name}"))
        jobs.append(script_job(
            ("ray_learning", name), "-c", RAY_LEARNING_MAIN,
            json.dumps([agent, actors, envs, deterministic, kill_at, workdir, overrides]),
            workdir=workdir,
        ))
    return jobs


# All `slow`. What the default suite asserts instead: Ray actors compute exactly what
# threads compute (`params_sha256`, above) and threads solve CartPole with PPO
# (tests/sebulba/test_host_actors.py); a killed actor process is restarted and the run
# finishes (above); A3C's worker gradient is Algorithm S3's and a fresh one served is
# A2C's update (tests/agents/test_a3c.py), and its Ray workers' gradients are applied in
# arrival order with their staleness logged (above).
SLOW_RAY_LEARNING = ("a3c", "apex", "ppo", "ppo_sigkill")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_RAY_LEARNING else name
    for name in sorted(RAY_LEARNING)
])
def test_ray_actors_solve_gymnasium_cartpole(background, name):
    result = background.result(("ray_learning", name))
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("SUMMARY "), result.stdout
    summary = json.loads(line[len("SUMMARY "):])
    assert summary["eval/episode_return"] >= 475, summary
    if name == "a3c":  # each applied gradient's staleness is logged (server - worker version)
        workdir = background.job(("ray_learning", name))["workdir"]
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        logged = [r for r in records if "staleness/mean" in r]
        assert len(logged) >= 10, records[-1].keys()
        assert all(0 <= r["staleness/mean"] <= r["staleness/max"] for r in logged)
        assert max(r["staleness/max"] for r in logged) >= 1  # 2 workers: some are stale
    if RAY_LEARNING[name][4]:  # an actor process was SIGKILLed mid-run
        assert summary["killed"] == 1 and summary["actor_restarts"] >= 1, summary
        workdir = background.job(("ray_learning", name))["workdir"]
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        assert max(r.get("actor_restarts", 0) for r in records) >= 1


# ------------------------------------------------------------------ stopping
def test_sigterm_ends_a_ray_run_and_its_actors_within_10_s(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "experiments/train.py", "--env=gymnasium:CartPole-v1",
         "--ray_actors=2", "--envs_per_thread=4", "--total_steps=5e6", "--log_points=2000",
         f"--workdir={workdir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"),
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not _has_records(workdir):
            time.sleep(0.5)
        assert _has_records(workdir), proc.stderr.read() if proc.poll() is not None else ""
        actors = processes.ray_actor_processes(proc.pid)
        assert len(actors) == 2
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 143, proc.stderr.read()
    assert stopped_s < 10
    time.sleep(1.0)
    assert not [pid for pid in actors if processes.alive(pid)]


def _has_records(workdir):
    path = workdir / "metrics.jsonl"
    return path.exists() and path.read_text().strip() != ""


def test_actor_deaths_beyond_the_limit_within_the_window_stop_the_run():
    limit = ray_fleet.RestartLimit(max_restarts=2, window_s=60.0)
    limit.died(0, RuntimeError("killed"), now=0.0)
    limit.died(1, RuntimeError("killed"), now=10.0)
    limit.died(0, RuntimeError("killed"), now=61.0)  # the first has left the window
    with pytest.raises(errors.ActorError, match=r"died 3 times within 60s .*actor 1"):
        limit.died(1, RuntimeError("killed\nmore"), now=62.0)
