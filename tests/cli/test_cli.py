"""experiments/train.py and benchmark.py as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "experiments", "train.py")
BENCHMARK = os.path.join(ROOT, "experiments", "benchmark.py")


def script_env(devices=1):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_script(script, *args, devices=1, timeout=600, input=None):
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True,
        env=script_env(devices), timeout=timeout, cwd=ROOT, input=input,
    )


def script_job(key, script, *args, devices=1, timeout=600, input=None, fast=False, **extra):
    """``run_script``'s run as a background job (conftest.BackgroundRuns); ``extra`` comes
    back with ``background.job(key)``. ``fast``: XLA's backend optimizations off (as
    ``tests.multiprocess.child_env``), for runs that check outputs, not learning."""
    env = script_env(devices)
    if fast:
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    return dict(key=key, argv=[sys.executable, script, *args], env=env,
                cwd=ROOT, timeout=timeout, input=input, **extra)


def read_tensorboard_scalars(directory):
    """``{tag: [(step, value), ...]}`` from the TFRecord event files in ``directory``."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


BAD_INPUTS = [
    (["--workdir="], "--workdir must name a directory, got '' (leave the flag out for "
                     "runs/<env>-<agent>-<time>)"),
    (["--env=CartPole-v9"], "--env must be a gymnax id"),
    (["--agent=sac"], "--agent must be one of ppo, impala, a2c"),
    (["--env=gymnasium:CartPole-v1", "--ray_actors=-1"], "--ray_actors must be an integer >= 0"),
    (["--env=gymnasium:CartPole-v1", "--ray_actors=2", "--actor_threads=2"],
     "--actor_threads applies to actor threads; with --ray_actors=2"),
    (["--env=gymnasium:CartPole-v1", "--ray_address=auto"],
     "--ray_address applies only with --ray_actors=N"),
    (["--agent=a3c"], "--agent=a3c needs gradient workers"),
    (["--env_module=no_such_module"], "--env_module=no_such_module cannot be imported"),
    (["--env=gymnasium:no_such_module:X-v0"],
     "--env=gymnasium:no_such_module:X-v0: module 'no_such_module' cannot be imported"),
    (["--eval_every=-1"], "--eval_every must be an integer >= 0, got -1"),
    (["--hidden_sizes=a,b"], "--hidden_sizes must be comma-separated integers, got 'a,b'"),
    (["--config=/nonexistent/config.json"], "--config=/nonexistent/config.json does not exist"),
    (["--agent=a2c", "--clip_eps=0.3"], "--clip_eps does not apply to --agent=a2c"),
    (["--clip_eps=-1"], "--clip_eps must be > 0, got -1.0"),
    (["--agent=impala", "--vtrace_lambda=2"], "--vtrace_lambda must be in [0, 1], got 2.0"),
    (["--agent=a3c", "--env=gymnasium:CartPole-v1"], "--agent=a3c needs gradient workers"),
    (["--agent=a3c", "--env=gymnasium:CartPole-v1", "--ray_actors=2", "--deterministic"],
     "--deterministic does not apply to --agent=a3c"),
    (["--env=gymnasium:CartPole-v1", "--num_seeds=2"],
     "--num_seeds must be 1 with host actors (--env=gymnasium:CartPole-v1), got 2"),
    (["--agent=impala", "--policy_lag=-1"], "--policy_lag must be an integer >= 0"),
    (["--agent=a2c", "--num_epochs=2"], "--num_epochs does not apply to --agent=a2c"),
    (["--agent=a2c", "--objective=kl"], "--objective does not apply to --agent=a2c"),
    (["--agent=a2c", "--optimizer=sgd"], "--optimizer must be one of adam, rmsprop"),
    (["--agent=a2c", "--gamma=1.5"], "--gamma must be in [0, 1]"),
    (["--torso=cnn"], "--torso=cnn needs image observations [H, W, C]; --env=CartPole-v1"),
    (["--torso=rnn"], "--torso must be one of mlp, cnn, nature, impala"),
    (["--torso=nature"], "--torso=nature needs image observations [H, W, C]; --env=CartPole-v1"),
    (["--env=Breakout-MinAtar", "--torso=nature"],
     "--torso=nature needs images of at least 36x36 (H, W); --env=Breakout-MinAtar has shape "
     "(10, 10, 4)"),
    (["--hidden_sizes="], "--hidden_sizes must be positive integers, got ()"),
    (["--lr=-0.1"], "--lr must be > 0"),
    (["--lr=0"], "--lr must be > 0"),
    (["--total_steps=0"], "--total_steps must be > 0"),
    (["--num_envs=-4"], "--num_envs must be > 0"),
    (["--num_envs=6", "--num_devices=4"], "--num_envs must be divisible by the number of devices"),
    (["--num_envs=4", "--rollout_len=3", "--num_minibatches=8"],
     "--num_minibatches=8 does not divide"),
    (["--num_devices=9"], "--num_devices must be in 1..4"),
    (["--objective=trpo"], "--objective must be one of clip, kl"),
    (["--eval_episodes=0"], "--eval_episodes must be > 0"),
    (["--cpu_threads=0"], "--cpu_threads must be > 0"),
    (["--num_envs=four"], "flag --num_envs=four"),
    (["--total_steps=1e3"], "--total_steps must be >= num_envs * rollout_len = 2048, got 1000"),
    (["--total_steps=1.5"], "flag --total_steps=1.5: 1.5 is not a whole number"),
    (["--num_envs=2.5e0"], "flag --num_envs=2.5e0: 2.5e0 is not a whole number"),
    (["--total_steps=1e99"], "flag --total_steps=1e99: 1e99 is too large"),
    (["--startup_timeout_s=0"], "--startup_timeout_s must be > 0, got 0"),
    (["--chunk_compile=fast"], "flag --chunk_compile=fast: value should be one of"),
    (["--agent=apex", "--total_steps=4096"],
     "--learning_starts must be <= the run's env steps per seed (4096"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["extra"], "unexpected arguments"),
    (["--env=gymnasium:NoSuchEnv-v0"], "'NoSuchEnv-v0' is not a registered Gymnasium id"),
    (["--env=gymnasium:ALE/NoSuchGame-v5"], "'ALE/NoSuchGame-v5' is not an ALE game (e.g."),
    (["--env=envpool:Ant-v5"], "'Ant-v5' is not an Atari game EnvPool has (e.g. Pong-v5"),
    (["--env=gymnasium:CartPole-v1", "--terminal_on_life_loss"],
     "--terminal_on_life_loss applies only to Atari games"),
    (["--actor_threads=2"], "--actor_threads applies only to host actors"),
    (["--env=gymnasium:CartPole-v1", "--num_envs=8"], "--num_envs does not apply to host actors"),
    (["--env=gymnasium:CartPole-v1", "--chunk_compile=quick"],
     "--chunk_compile does not apply to host actors"),
    (["--env=gymnasium:CartPole-v1", "--envs_per_thread=4", "--learner_devices=1,2,3"],
     "--envs_per_thread=4 must be divisible by the number of learner devices (3)"),
    (["--agent=apex", "--env=Pendulum-v1"], "--agent=apex acts in Discrete action spaces"),
    (["--batch_size=64"], "--batch_size does not apply to --agent=ppo"),
    (["--agent=apex", "--batch_size=30", "--num_devices=4"],
     "--batch_size must be divisible by the number of devices (4), got 30"),
    (["--agent=apex", "--env=gymnasium:CartPole-v1", "--param_refresh_steps=-1"],
     "--param_refresh_steps must be an integer >= 0, got -1"),
    (["--seed=2147483648"], "--seed must be in [-2147483648, 2147483647], got 2147483648"),
    (["--workdir=/proc/jaxrl_dist_test"],
     "--workdir=/proc/jaxrl_dist_test cannot be created: No such file or directory"),
]


# train.py's main on many argument lists in ONE process (one python + jax import instead
# of one per case, ~3.5 s each): flags are parsed afresh for each list, cli.fail raises
# instead of exiting, and file descriptor 2 is captured per case. A list that passes
# validation stops before training. SUBPROCESS_CASES run as the real program.
BATCH_MAIN = r"""
import importlib.util, json, os, sys, tempfile, traceback
from absl import flags
from jaxrl_dist import cli
from jaxrl_dist.sebulba import training as host_training
from jaxrl_dist.anakin import training

class Exit(Exception):
    def __init__(self, code):
        self.code = code

def fail(message):
    sys.stderr.write(f"error: {message}\n")
    raise Exit(2)

def no_training(*args, **kwargs):
    raise Exit("passed validation, would train")

cli.fail = fail
training.train = host_training.train_host = no_training
spec = importlib.util.spec_from_file_location("train_script", sys.argv[1])
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
results = []
for args in json.load(sys.stdin):
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        try:
            flags.FLAGS.unparse_flags()
            train.main(cli.parse_flags([sys.argv[1], *args]))
            code = 0
        except Exit as e:
            code = e.code
        except SystemExit as e:
            code = e.code
        except Exception:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        err.seek(0)
        results.append({"returncode": code, "stderr": err.read().decode()})
print("RESULTS " + json.dumps(results))
"""


def check_bad_input(result, workdir, message):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(background, args, message):
    batch, job = background.result("cli/bad_inputs"), background.job("cli/bad_inputs")
    assert batch.returncode == 0, batch.stderr
    line = batch.stdout.strip().splitlines()[-1]
    assert line.startswith("RESULTS "), batch.stdout
    i = job["cases"].index(list(args))
    r = json.loads(line[len("RESULTS "):])[i]
    result = subprocess.CompletedProcess(args, r["returncode"], "", r["stderr"])
    check_bad_input(result, job["workdirs"][i], message)


# The real program (exit code from os._exit, nothing shared), one case per stage that
# rejects: absl's parser, a positional argument, the agent's config, the host layout.
SUBPROCESS_CASES = [
    case for case in BAD_INPUTS
    if case[0] in (["--num_envs=four"], ["--total_steps=1.5"], ["extra"],
                   ["--agent=a2c", "--gamma=1.5"],
                   ["--env=gymnasium:CartPole-v1", "--envs_per_thread=4",
                    "--learner_devices=1,2,3"])
]


@pytest.mark.parametrize(("args", "message"), SUBPROCESS_CASES)
def test_bad_input_in_its_own_process(background, args, message):
    key = ("cli/bad_input", tuple(args))
    check_bad_input(background.result(key), background.job(key)["workdir"], message)


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"env_steps": 1}\n')
    result = run_script(TRAIN, f"--workdir={tmp_path}", timeout=120)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == '{"env_steps": 1}\n'


BENCHMARK_BAD_INPUTS = [
    (["--num_minibatches=0"], "--num_minibatches must be > 0, got 0"),
    (["--env=gymnasium:CartPole-v1", "--raw_seconds=0"], "--raw_seconds must be > 0, got 0.0"),
    (["--env=gymnasium:CartPole-v1", "--raw_seconds=inf"], "--raw_seconds must be finite, got inf"),
]


@pytest.mark.parametrize(("args", "message"), BENCHMARK_BAD_INPUTS)
def test_benchmark_bad_input_exit_2(args, message):
    result = run_script(BENCHMARK, *args, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"


@pytest.mark.parametrize("agent", ["ppo", "impala"])  # a2c's train.py run: test_learning.py
def test_train_writes_metrics_config_checkpoint_and_plot(background, agent):
    result = background.result(("cli/train", agent))
    tmp_path = background.job(("cli/train", agent))["workdir"]
    assert result.returncode == 0, result.stderr
    assert "env_steps" in result.stdout and "sps" in result.stdout
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) >= 5
    for record in lines[:-1]:
        assert {"env_steps", "wall_s", "sps", "train/episode_return"} <= record.keys()
        assert record["sps"] > 0
    steps = [r["env_steps"] for r in lines[:-1]]
    assert steps == sorted(steps) and steps[-1] == 16384
    final = lines[-1]
    assert len(final["params_sha256"]) == 64
    assert len(final["eval/episode_return_per_seed"]) == 2
    assert final["eval/episode_return"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["agent"] == agent
    assert config["num_envs"] == 8 and config["num_seeds"] == 2
    assert config["num_devices_used"] == 2
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "checkpoint").is_dir()
    scalars = read_tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["train/episode_return"]] == steps
    np_returns = [r["train/episode_return"] for r in lines[:-1]]
    assert [v for _, v in scalars["train/episode_return"]] == pytest.approx(np_returns, rel=1e-6)
    assert scalars["eval/episode_return"] == [(16384, pytest.approx(final["eval/episode_return"]))]

    import hashlib

    import jax
    import numpy as np

    from jaxrl_dist.run import checkpoint

    params = checkpoint.load_params(str(tmp_path / "checkpoint"))
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    assert digest.hexdigest() == final["params_sha256"]


@pytest.mark.parametrize("agent", ["ppo", "impala"])  # a2c: same code path as impala
def test_benchmark_prints_table_and_json(background, agent):
    result = background.result(("cli/benchmark", agent))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any("env steps/s (after compile)" in line for line in lines)
    summary = json.loads(lines[-1])
    assert summary["agent"] == agent
    assert summary["env_steps"] == 8192
    assert summary["sps"] > 0 and summary["compile_s"] > 0 and summary["init_s"] > 0
    assert summary["run_total_s"] > summary["init_s"] + summary["compile_s"] + summary["train_s"]
    assert summary["num_devices"] == 1 and summary["backend"] == "cpu"
    # Optimized unless asked; this fast run (no XLA optimizations) has no tiers.
    assert (summary["chunk_compile"], summary["chunk_tier"]) == ("optimized", "default")


def test_host_actor_benchmark_reports_the_ratio_to_raw_env_steps(background):
    result = background.result("cli/benchmark_host")
    assert result.returncode == 0, result.stderr
    assert "raw random-action env steps/s" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["acting"] == "host" and summary["env_steps"] == 4096
    assert summary["actor_threads"] == 2 and summary["num_processes"] == 1
    assert summary["sps"] > 0 and summary["raw_random_action_sps"] > 0
    assert summary["ratio"] == pytest.approx(
        summary["sps"] / summary["raw_random_action_sps"], abs=2e-3
    )
    assert set(summary["stage_seconds"]) >= {"inference_s", "env_step_s", "update_s"}


def test_integer_parser_takes_whole_numbers_in_scientific_notation():
    from jaxrl_dist import cli

    parser = cli.IntegerParser()
    for text, value in [("5e5", 500_000), ("1E6", 1_000_000), ("2.5e3", 2500),
                        ("1000.0", 1000), ("-1e3", -1000), ("12", 12), ("0x10", 16),
                        ("0e0", 0), (7, 7)]:
        assert parser.parse(text) == value, text
        assert type(parser.parse(text)) is int
    for text, message in [("1.5", "1.5 is not a whole number"), ("2.5e0", "is not a whole"),
                          ("inf", "inf is not an integer"), ("nan", "nan is not an integer"),
                          ("four", "invalid literal for int()"), ("1e40", "is too large")]:
        with pytest.raises(ValueError, match=message):
            parser.parse(text)
    with pytest.raises(ValueError, match="0 is not a positive integer"):
        cli.IntegerParser(lower_bound=1).parse("0e3")
    assert parser.flag_type() == "int"  # --help shows an int


# Every integer flag that train.py and benchmark.py define themselves or through
# jaxrl_dist.cli goes through cli.IntegerParser.
INTEGER_FLAGS = r"""
import importlib.util, json, sys
from absl import flags
from jaxrl_dist import cli

spec = importlib.util.spec_from_file_location("script", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
ours = {"script", "jaxrl_dist.cli"}
ints = {name: type(flag.parser).__module__ for name, flag in flags.FLAGS._flags().items()
        if isinstance(flag.parser, flags.IntegerParser)
        and flags.FLAGS.find_module_defining_flag(name) in ours}
print(json.dumps([sorted(ints), sorted(n for n, m in ints.items() if m != cli.__name__)]))
"""


def test_every_integer_flag_of_the_scripts_takes_scientific_notation():
    procs = [subprocess.Popen([sys.executable, "-c", INTEGER_FLAGS, script], cwd=ROOT,
                              env=script_env(), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for script in (TRAIN, BENCHMARK)]
    for proc, own in zip(procs, (["checkpoint_every", "eval_episodes", "log_points"],
                                 ["repeats"]), strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        names, plain = json.loads(out.strip().splitlines()[-1])
        assert plain == [], plain
        assert {"total_steps", "num_envs", "seed", "startup_timeout_s", *own} <= set(names)


def test_rounding_note_names_the_env_steps_the_run_takes():
    from jaxrl_dist import agents
    from jaxrl_dist.agents import common

    config = agents.default_config("ppo", "CartPole-v1", total_steps=500_000, num_envs=8,
                                   rollout_len=64)
    assert common.rounding_note(config) == (
        "total_steps=500000 is rounded down to 499712 env steps per seed "
        "(976 updates of 512)")
    assert common.rounding_note(agents.default_config("ppo", "CartPole-v1", total_steps=512 * 3,
                                                   num_envs=8, rollout_len=64)) is None


def test_train_takes_total_steps_in_scientific_notation_and_states_the_rounding(background):
    result = background.result("cli/scientific_notation")
    workdir = background.job("cli/scientific_notation")["workdir"]
    assert result.returncode == 0, result.stderr
    assert ("total_steps=10000 is rounded down to 9728 env steps per seed "
            "(19 updates of 512)") in result.stdout.splitlines()
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] == 9728
    config = json.loads((workdir / "config.json").read_text())
    assert config["total_steps"] == 10000 and config["rollout_len"] == 64


def test_agent_that_cannot_act_in_the_action_space(monkeypatch):
    from jaxrl_dist import agents, errors

    monkeypatch.setitem(agents.AGENTS, "discrete_only",
                        agents.AgentSpec("D", "none", ("Discrete",)))
    with pytest.raises(errors.ConfigError) as info:
        agents.check_env_and_agent("discrete_only", "Pendulum-v1")
    assert str(info.value) == (
        "--agent=discrete_only acts in Discrete action spaces; --env=Pendulum-v1 has Box"
    )
    agents.check_env_and_agent("discrete_only", "CartPole-v1")  # no error


def background_runs(items, tmp_path_factory):
    """This module's subprocess runs, made in the background (conftest.BackgroundRuns)."""
    jobs = []
    cases = [item.callspec.params["args"] for item in items
             if item.originalname == "test_bad_input_is_one_line_exit_2_and_writes_nothing"]
    if cases:
        root = tmp_path_factory.mktemp("bad_inputs")
        workdirs = [root / f"run{i}" for i in range(len(cases))]
        argvs = [[f"--workdir={w}", *args] for w, args in zip(workdirs, cases, strict=True)]
        jobs.append(script_job("cli/bad_inputs", "-c", BATCH_MAIN, TRAIN, devices=4,
                               input=json.dumps(argvs), cases=cases, workdirs=workdirs))
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        if item.originalname == "test_bad_input_in_its_own_process":
            workdir = tmp_path_factory.mktemp("bad_input") / "run"
            jobs.append(script_job(("cli/bad_input", tuple(params["args"])), TRAIN,
                                   f"--workdir={workdir}", *params["args"], devices=4,
                                   timeout=120, workdir=workdir))
        elif item.originalname == "test_train_writes_metrics_config_checkpoint_and_plot":
            workdir = tmp_path_factory.mktemp(f"train_{params['agent']}")
            jobs.append(script_job(
                ("cli/train", params["agent"]), TRAIN, f"--workdir={workdir}",
                f"--agent={params['agent']}", "--total_steps=16384", "--num_envs=8",
                "--rollout_len=64", "--num_seeds=2", "--eval_episodes=4", "--compilation_cache=",
                "--num_devices=2", devices=4, workdir=workdir, fast=True,
            ))
        elif item.originalname == "test_host_actor_benchmark_reports_the_ratio_to_raw_env_steps":
            jobs.append(script_job(
                "cli/benchmark_host", BENCHMARK, "--env=gymnasium:CartPole-v1",
                "--total_steps=4096", "--envs_per_thread=8", "--rollout_len=32",
                "--raw_seconds=1", fast=True,
            ))
        elif item.originalname == (
                "test_train_takes_total_steps_in_scientific_notation_and_states_the_rounding"):
            workdir = tmp_path_factory.mktemp("scientific_notation")
            jobs.append(script_job(
                "cli/scientific_notation", TRAIN, f"--workdir={workdir}", "--total_steps=1e4",
                "--num_envs=8", "--rollout_len=6.4e1", "--eval_episodes=2e0",
                "--log_points=2", "--compilation_cache=", workdir=workdir, fast=True,
            ))
        elif item.originalname == "test_benchmark_prints_table_and_json":
            jobs.append(script_job(
                ("cli/benchmark", params["agent"]), BENCHMARK, f"--agent={params['agent']}",
                "--total_steps=8192", "--num_envs=16", "--rollout_len=32", fast=True,
            ))
    return jobs
