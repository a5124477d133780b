"""cpu_threads: the rule for XLA's CPU pool size, its application, and that it does not
change what a small PPO run computes."""

import json
import subprocess
import sys

import pytest

from jaxrl_dist import agents, cpu_threads
from tests.test_cli import TRAIN, script_job

SMALL = dict(num_envs=4, rollout_len=128, lr=2.5e-4)  # PureJaxRL's CartPole config


def ppo(**overrides):
    return agents.default_config("ppo", "CartPole-v1", **overrides)


@pytest.mark.parametrize("overrides, num_seeds, num_devices, expected", [
    (SMALL, 1, None, 1),  # minibatches of 128
    (SMALL, 1, 1, 1),
    (dict(num_envs=8, rollout_len=128), 1, None, 1),  # 256: the edge, inside
    (dict(num_envs=16, rollout_len=64), 2, None, None),  # 256 x 2 seeds
    ({}, 1, None, None),  # the default 32 x 64: minibatches of 512
    (dict(num_envs=2048, rollout_len=16), 1, None, None),
    (dict(num_envs=128, rollout_len=2, num_minibatches=1), 1, None, None),  # 128 envs
    (SMALL, 1, 2, None),  # devices share the pool
    (dict(SMALL, hidden_sizes=(256, 256)), 1, None, None),
])
def test_auto_threads_picks_one_only_in_the_measured_region(
    overrides, num_seeds, num_devices, expected
):
    assert cpu_threads.auto_threads(ppo(**overrides), num_seeds, num_devices) == expected


def test_auto_threads_leaves_unmeasured_agents_and_torsos_alone():
    a2c = agents.default_config("a2c", "CartPole-v1", num_envs=4, rollout_len=16)
    assert cpu_threads.auto_threads(a2c) is None
    assert cpu_threads.auto_threads(ppo(**SMALL, torso="cnn")) is None
    assert cpu_threads.auto_threads(None) is None


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*cpu_threads.ENV_VARS, "JAX_PLATFORMS", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(cpu_threads, "backend_created", lambda: False)
    return monkeypatch


def test_choose_flag_then_environment_then_rule(clean_env):
    import os

    assert cpu_threads.choose(None, ppo(), 1) is None
    assert "PJRT_NPROC" not in os.environ
    assert cpu_threads.choose(None, ppo(**SMALL), 1) == 1
    assert os.environ["PJRT_NPROC"] == "1"
    clean_env.setenv("PJRT_NPROC", "2")  # the user's setting is kept
    assert cpu_threads.choose(None, ppo(**SMALL), 1) == 2
    assert os.environ["PJRT_NPROC"] == "2"
    assert cpu_threads.choose(3, ppo(**SMALL), 1) == 3  # the flag wins
    assert os.environ["PJRT_NPROC"] == "3"


@pytest.mark.parametrize("variable, value", [
    ("XLA_FLAGS", "--xla_force_host_platform_device_count=4"),
    ("JAX_PLATFORMS", "cuda,cpu"),
])
def test_choose_rule_only_on_one_cpu_device(clean_env, variable, value):
    import os

    clean_env.setenv(variable, value)
    assert cpu_threads.choose(None, ppo(**SMALL), 1) is None
    assert "PJRT_NPROC" not in os.environ


def test_set_threads_errors(clean_env):
    with pytest.raises(ValueError, match="num_threads must be >= 1, got 0"):
        cpu_threads.set_threads(0)
    clean_env.setattr(cpu_threads, "backend_created", lambda: True)
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        cpu_threads.set_threads(1)


def test_backend_created_after_a_computation():
    import jax.numpy as jnp

    jnp.zeros(2).block_until_ready()
    assert cpu_threads.backend_created()


POOL = """
import sys
from jaxrl_dist import cpu_threads
if sys.argv[1] != "default":
    cpu_threads.set_threads(int(sys.argv[1]))
import jax.numpy as jnp
(jnp.ones(8) + 1).block_until_ready()
print(cpu_threads.pool_threads())
"""


def test_set_threads_sizes_the_pool_xla_creates():
    import os

    env = {k: v for k, v in os.environ.items() if k not in cpu_threads.ENV_VARS}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

    def pool(arg):
        out = subprocess.run([sys.executable, "-c", POOL, arg], env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        return int(out.stdout.split()[-1])

    assert pool("1") == 1
    assert pool("3") == 3
    assert pool("default") == len(os.sched_getaffinity(0))


def background_runs(items, tmp_path_factory):
    """Two short PPO runs at PureJaxRL's config: the automatic single thread, and two."""
    if not any(item.originalname == "test_one_thread_trains_the_same_parameters"
               for item in items):
        return []
    jobs = []
    for name, extra in (("auto", []), ("two", ["--cpu_threads=2"])):
        workdir = tmp_path_factory.mktemp(f"threads_{name}")
        jobs.append(script_job(
            ("cpu_threads", name), TRAIN, f"--workdir={workdir}", "--num_envs=4",
            "--rollout_len=128", "--lr=2.5e-4", "--total_steps=8192", "--eval_episodes=2",
            "--compilation_cache=", *extra, workdir=workdir, fast=True,
        ))
    return jobs


def test_one_thread_trains_the_same_parameters(background):
    records = {}
    for name in ("auto", "two"):
        result = background.result(("cpu_threads", name))
        assert result.returncode == 0, result.stderr
        workdir = background.job(("cpu_threads", name))["workdir"]
        config = json.loads((workdir / "config.json").read_text())
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        records[name] = (config["cpu_threads"], json.loads(lines[-1])["params_sha256"])
    assert records["auto"][0] == 1
    assert records["two"][0] == 2
    assert records["auto"][1] == records["two"][1]
