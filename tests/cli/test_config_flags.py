"""Every config field is a flag; --print_config; --config re-runs a finished run; --help,
--helpfull."""

import dataclasses
import json
import subprocess
import sys

from absl import flags

from jaxrl_dist import agents, cli
from jaxrl_dist.cli import config_flags
from tests.cli.test_cli import TRAIN, run_script, script_job

# A short on-device run, then the same configuration from its config.json (background).
SHORT = ["--agent=ppo", "--total_steps=8192", "--num_envs=8", "--rollout_len=32",
         "--clip_eps=0.25", "--hidden_sizes=32,32", "--seed=3", "--eval_episodes=2",
         "--log_points=2"]


def background_runs(items, tmp_path_factory):
    if not any(item.originalname == "test_config_json_reproduces_the_run" for item in items):
        return []
    base = tmp_path_factory.mktemp("config_json")
    first, again = str(base / "first"), str(base / "again")
    script = (
        "import subprocess, sys\n"
        f"a = subprocess.run([sys.executable, {TRAIN!r}, *{SHORT!r}, '--workdir={first}'])\n"
        "assert a.returncode == 0\n"
        f"b = subprocess.run([sys.executable, {TRAIN!r}, '--config={first}/config.json', "
        f"'--workdir={again}'])\n"
        "assert b.returncode == 0\n"
        # A flag beside --config overrides that field only.
        f"c = subprocess.run([sys.executable, {TRAIN!r}, '--config={first}/config.json', "
        f"'--clip_eps=0.3', '--print_config'], capture_output=True, text=True)\n"
        f"open({str(base / 'override.json')!r}, 'w').write(c.stdout)\n"
        "sys.exit(c.returncode)\n"
    )
    return [script_job("config/json", "-c", script, first=first, again=again,
                       override=str(base / "override.json"), fast=True)]


def test_every_config_field_of_every_agent_has_a_flag_with_help():
    values = flags.FlagValues()
    cli.define_config_flags(values)
    known = config_flags.fields()
    for agent in agents.AGENTS:
        config = agents.default_config(agent, "CartPole-v1")
        for field in dataclasses.fields(config):
            if field.name == "env":
                continue
            assert field.name in known, (agent, field.name)
            assert agent in known[field.name].agents
            flag = values[field.name]
            assert flag.default is None and "--print_config" in flag.help
            assert known[field.name].help


def test_print_config_shows_flags_over_the_defaults():
    result = run_script(TRAIN, "--agent=apex", "--env=gymnasium:CartPole-v1",
                        "--hidden_sizes=32,16", "--noanneal_lr", "--priority_alpha=0.5",
                        "--ray_actors=2", "--print_config", timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["agent"] == "apex" and record["hidden_sizes"] == [32, 16]
    assert record["anneal_lr"] is False and record["priority_alpha"] == 0.5
    assert record["host"]["ray_actors"] == 2
    default = json.loads(run_script(TRAIN, "--agent=impala", "--print_config",
                                    timeout=120).stdout)
    assert default == {"agent": "impala", **json.loads(json.dumps(dataclasses.asdict(
        agents.default_config("impala", "CartPole-v1"))))}


def test_help_exits_0_and_lists_the_flags_that_matter():
    result = subprocess.run([sys.executable, TRAIN, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--agent", "--env", "--total_steps", "--lr", "--clip_eps", "--gae_lambda",
                 "--hidden_sizes", "--config", "--print_config", "--ray_actors"):
        assert flag in result.stdout, flag
    assert "--print_config" in result.stdout.splitlines()[-1]
    full = subprocess.run([sys.executable, TRAIN, "--helpfull"], capture_output=True,
                          text=True, timeout=120)
    assert full.returncode == 0 and full.stderr == "", full.stderr
    assert "--agent" in full.stdout and "absl.flags" in full.stdout  # every module's flags
    assert len(full.stdout.splitlines()) > len(result.stdout.splitlines())


def test_config_json_reproduces_the_run(background):
    result = background.result("config/json")
    assert result.returncode == 0, result.stderr[-3000:]
    job = background.job("config/json")

    def last(workdir):
        with open(f"{workdir}/metrics.jsonl") as f:
            return json.loads(f.read().strip().splitlines()[-1])

    with open(f"{job['again']}/config.json") as f:
        again = json.load(f)
    assert again["clip_eps"] == 0.25 and again["hidden_sizes"] == [32, 32]
    assert again["seed"] == 3
    assert last(job["again"])["params_sha256"] == last(job["first"])["params_sha256"]
    with open(job["override"]) as f:
        overridden = json.load(f)
    assert overridden["clip_eps"] == 0.3
    shared = [k for k in overridden if k in again and k != "clip_eps"]
    assert {"hidden_sizes", "total_steps", "num_envs"} <= set(shared)
    assert {k: overridden[k] for k in shared} == {k: again[k] for k in shared}
