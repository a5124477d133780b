"""cpu_threads: the rule for XLA's CPU pool size, its application, and that it does not
change what a small run computes."""

import json
import subprocess
import sys

import pytest

from jaxrl_dist import agents
from jaxrl_dist.cpu import threads as cpu_threads
from tests.cli.test_cli import TRAIN, script_job

SMALL = dict(num_envs=4, rollout_len=128, lr=2.5e-4)  # PureJaxRL's CartPole config


def ppo(**overrides):
    return agents.default_config("ppo", "CartPole-v1", **overrides)


@pytest.mark.parametrize("overrides, num_seeds, num_devices, expected", [
    (SMALL, 1, None, 1),  # minibatches of 128
    (SMALL, 1, 1, 1),
    (dict(num_envs=8, rollout_len=128), 1, None, 1),  # 256
    (dict(num_envs=16, rollout_len=64), 2, None, 1),  # 256 x 2 seeds: the edge, inside
    (dict(num_envs=16, rollout_len=64), 3, None, None),  # 256 x 3 seeds > 512
    ({}, 1, None, 1),  # the default 32 x 64: minibatches of 512
    ({}, 3, None, None),  # the default over 3 seeds: 1,536
    (dict(num_envs=64, rollout_len=64), 1, None, None),  # minibatches of 1,024
    (dict(num_envs=2048, rollout_len=16), 1, None, None),
    (dict(num_envs=128, rollout_len=2, num_minibatches=1), 1, None, None),  # 128 envs
    (SMALL, 1, 2, None),  # devices share the pool
    (dict(SMALL, hidden_sizes=(256, 256)), 1, None, None),
])
def test_auto_threads_picks_one_only_in_the_measured_region(
    overrides, num_seeds, num_devices, expected
):
    assert cpu_threads.auto_threads(ppo(**overrides), num_seeds, num_devices) == expected


@pytest.mark.parametrize("agent, overrides, num_seeds, expected", [
    ("impala", {}, 1, 1),  # 16 x 20: one gradient step on 320 samples
    ("impala", dict(num_envs=64), 1, None),  # 1,280 samples
    ("impala", dict(num_envs=64, num_minibatches=4), 1, 1),  # 4 steps of 320, 64 envs
    ("a2c", {}, 1, 1),  # 16 x 5: 80 samples
    ("a2c", {}, 4, 1),  # 320 samples, 64 envs over 4 seeds
    ("a2c", {}, 5, None),  # 80 envs over 5 seeds
    ("a2c", dict(rollout_len=32), 1, 1),  # 512 samples: the edge, inside
    ("a2c", dict(rollout_len=33), 1, None),  # 528
    ("a2c", dict(num_envs=64), 1, 1),  # 320 samples, 64 envs
    ("a2c", dict(num_envs=256), 1, None),
    ("apex", {}, 1, 1),  # batches of 256
    ("apex", dict(batch_size=512), 1, 1),  # the edge, inside
    ("apex", dict(batch_size=1024), 1, None),
    ("apex", dict(num_envs=128), 1, None),
])
def test_auto_threads_for_the_other_agents(agent, overrides, num_seeds, expected):
    config = agents.default_config(agent, "CartPole-v1", **overrides)
    assert cpu_threads.auto_threads(config, num_seeds) == expected


def test_auto_threads_leaves_wide_or_convolutional_networks_alone():
    assert cpu_threads.auto_threads(ppo(**SMALL, torso="cnn")) is None
    assert cpu_threads.auto_threads(agents.default_config("apex", "Breakout-MinAtar")) is None
    assert cpu_threads.auto_threads(agents.default_config("a2c", "Breakout-MinAtar")) is None
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

    assert cpu_threads.choose(None, ppo(num_envs=64, rollout_len=64), 1) is None  # 1,024
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
from jaxrl_dist.cpu import threads as cpu_threads
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


# Short runs whose automatic pool is one thread: PureJaxRL's PPO config, PPO's CartPole
# default (minibatches of 512, the edge), IMPALA's CartPole default (one gradient step on
# 320 samples per update) and Ape-X's. Runs this short compile their chunk in the quick
# tier (compile_options.chunk_tier), "ppo_optimized" in the tier of longer runs; the runs
# marked fast compile without XLA's optimizations (no tiers; the initial state still
# compiles with the run-once options), the others as users' runs do.
SMALL_RUNS = {
    "ppo": (["--num_envs=4", "--rollout_len=128", "--lr=2.5e-4", "--total_steps=8192"],
            "quick"),
    "ppo_optimized": (["--num_envs=4", "--rollout_len=128", "--lr=2.5e-4",
                       "--total_steps=8192", "--chunk_compile=optimized"], "optimized"),
    "ppo_default": (["--total_steps=16384"], "fast"),
    "impala": (["--agent=impala", "--total_steps=6400"], "fast"),
    "apex": (["--agent=apex", "--total_steps=6400", "--learning_starts=2048"], "quick"),
}


def background_runs(items, tmp_path_factory):
    """Each small run twice: with the automatic single thread, and with two."""
    if not any(item.originalname == "test_one_thread_trains_the_same_parameters"
               for item in items):
        return []
    jobs = []
    for agent, (args, tier) in SMALL_RUNS.items():
        for name, extra in (("auto", []), ("two", ["--cpu_threads=2"])):
            workdir = tmp_path_factory.mktemp(f"threads_{agent}_{name}")
            jobs.append(script_job(
                ("cpu_threads", agent, name), TRAIN, f"--workdir={workdir}", *args,
                "--eval_episodes=2", "--compilation_cache=", *extra, workdir=workdir,
                fast=tier == "fast",
            ))
    return jobs


@pytest.mark.parametrize("agent", sorted(SMALL_RUNS))
def test_one_thread_trains_the_same_parameters(background, agent):
    records = {}
    for name in ("auto", "two"):
        result = background.result(("cpu_threads", agent, name))
        assert result.returncode == 0, result.stderr
        workdir = background.job(("cpu_threads", agent, name))["workdir"]
        config = json.loads((workdir / "config.json").read_text())
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        records[name] = (config["cpu_threads"], json.loads(lines[-1])["params_sha256"])
        tier = SMALL_RUNS[agent][1]
        assert config["chunk_tier"] == ("default" if tier == "fast" else tier)
    assert records["auto"][0] == 1
    assert records["two"][0] == 2
    assert records["auto"][1] == records["two"][1]
