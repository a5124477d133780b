"""Run files are verified and never silently lost: damaged checkpoints (truncated,
zeroed, one changed byte, a missing part, damaged metadata) are detected by their
digests and skipped for the newest intact one; a damaged config.json is a one-line
error; damaged metrics.jsonl lines are reported and the rest kept; a missing
metrics.jsonl is started again from the checkpoint."""

import dataclasses
import glob
import json
import os
import pathlib
import shutil

import pytest

from jaxrl_dist import agents, errors
from jaxrl_dist.anakin import training
from jaxrl_dist.run import checkpoint
from tests import multiprocess as mp

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

# 40 updates of 64 steps, a checkpoint every 10: checkpoints/ keeps 30 and 40.
CONFIG = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=16,
                               total_steps=64 * 40)
SETTINGS = training.RunSettings(num_devices=1, eval_episodes=2, log_points=40,
                                progress_every_s=1e9, checkpoint_every=10)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run's workdir and summary."""
    import jax

    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # as the resumed runs
    try:
        summary = training.train(CONFIG, SETTINGS, workdir, log=lambda s: None)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
    assert checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints")).steps() == [40, 30]
    return workdir, summary


def copy_of(finished, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(finished[0], workdir)
    return workdir


def resume(workdir):
    lines = []
    summary = training.train(CONFIG, dataclasses.replace(SETTINGS, resume=True), workdir,
                             log=lines.append)
    return summary, lines


def state_files(step_dir):
    return sorted((f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True)
                   if os.path.isfile(f) and "/d/" in f), key=os.path.getsize)


def truncate(step_dir):
    path = state_files(step_dir)[-1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def zero(step_dir):
    for path in state_files(step_dir):
        with open(path, "r+b") as f:
            f.write(b"\0" * os.path.getsize(path))


def change_one_byte(step_dir):
    # The largest data file holds the parameters: one bit of one byte in its middle.
    path = state_files(step_dir)[-1]
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2] ^= 0x10
    pathlib.Path(path).write_bytes(bytes(data))


def remove_state(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def damage_meta(step_dir):
    path = pathlib.Path(step_dir, "meta", "metadata")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def change_meta_value(step_dir):
    path = pathlib.Path(step_dir, "meta", "metadata")
    meta = json.loads(path.read_text())
    meta["env_steps"] += 1
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [truncate, zero, change_one_byte, remove_state,
                                    damage_meta, change_meta_value])
def test_resume_skips_a_damaged_newest_checkpoint_for_the_older_intact_one(
        finished, tmp_path, damage):
    workdir = copy_of(finished, tmp_path)
    damage(os.path.join(workdir, "checkpoints", "40"))
    summary, lines = resume(workdir)
    assert summary["resumed_from"] == 30
    skipped = [line for line in lines if line.startswith("resume: skipped")]
    assert len(skipped) == 1 and "40 (" in skipped[0] and "restored update 30" in skipped[0]
    # The last 10 updates are trained again: the same parameters as the finished run.
    assert summary["params_sha256"] == finished[1]["params_sha256"]
    assert os.path.isdir(os.path.join(workdir, "checkpoints.damaged", "40"))
    assert checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints")).steps() == [40, 30]


def test_a_changed_byte_is_never_restored_silently(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    ckpt = checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints"))
    meta = ckpt.meta(40)
    assert len(meta[checkpoint.STATE_DIGEST]) == 1 and checkpoint.META_DIGEST in meta
    change_one_byte(os.path.join(workdir, "checkpoints", "40"))
    path = training.OnDevicePath(CONFIG, SETTINGS, lambda s: None)
    with pytest.raises(checkpoint.DamagedCheckpoint, match="digest|unreadable"):
        path.restore(ckpt, 40)


def test_no_intact_checkpoint_is_a_one_line_error(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    truncate(os.path.join(workdir, "checkpoints", "40"))
    damage_meta(os.path.join(workdir, "checkpoints", "30"))
    with pytest.raises(errors.ConfigError) as info:
        resume(workdir)
    message = str(info.value)
    assert "\n" not in message and "reads back and verifies" in message
    assert "40 (" in message and "30 (meta unreadable" in message
    # Nothing was moved or changed: both are still there for the user to inspect.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[:2] == ["30", "40"]


def test_damaged_metrics_lines_are_reported_and_the_rest_kept(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    path = os.path.join(workdir, "metrics.jsonl")
    lines = pathlib.Path(path).read_text().splitlines()
    original = [json.loads(line) for line in lines]
    lines[5] = lines[5][:20]  # cut, as by a crash or a bad disk
    lines[12] = "\x00" * 30
    truncate(os.path.join(workdir, "checkpoints", "40"))
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    summary, log = resume(workdir)
    assert any("skipped 2 unreadable line(s) (6, 13); kept 28 record(s)" in line
               for line in log), log
    kept = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]
    steps = [r["env_steps"] for r in kept[:-1]]
    # Every parseable record up to the restored update, then the retrained ones.
    assert steps == [r["env_steps"] for i, r in enumerate(original[:-1]) if i not in (5, 12)]
    assert kept[-1]["params_sha256"] == summary["params_sha256"]


def test_a_missing_metrics_file_starts_again_from_the_checkpoint(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    os.remove(os.path.join(workdir, "learning_curve.png"))
    truncate(os.path.join(workdir, "checkpoints", "40"))
    summary, log = resume(workdir)
    assert any("metrics.jsonl is missing; a new one starts at env step 1920" in line
               for line in log), log
    kept = [json.loads(line)
            for line in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in kept[:-1]] == [64 * u for u in range(31, 41)]
    assert os.path.getsize(os.path.join(workdir, "learning_curve.png")) > 0
    assert summary["params_sha256"] == finished[1]["params_sha256"]


@pytest.mark.parametrize("content", ['{"agent": "ppo", "num_envs"', "", "[1, 2]", "\xff\xfe"])
def test_a_damaged_config_json_is_a_one_line_error(finished, tmp_path, content):
    workdir = copy_of(finished, tmp_path)
    with open(os.path.join(workdir, "config.json"), "w", encoding="latin-1") as f:
        f.write(content)
    proc = mp.start(mp.TRAIN, ["--total_steps=2560", "--num_envs=4", "--rollout_len=16",
                               f"--workdir={workdir}", "--resume"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "config.json is damaged" in lines[0], err


def test_config_json_has_one_writer_and_one_reader(tmp_path):
    """run/config_file.py writes config.json and reads it for every use: a finished run
    (load_policy), --resume and --config, each naming what is wrong in its own words."""
    from jaxrl_dist.cli import config_flags
    from jaxrl_dist.run import config_file

    path = config_file.write(str(tmp_path), CONFIG, agent="ppo", seed=3, num_seeds=1)
    saved = config_file.read(str(tmp_path))
    assert saved == config_file.load(path) == config_flags.read_config_file(path)
    assert saved["hidden_sizes"] == [64, 64] and saved["seed"] == 3
    assert config_file.config_from_record(saved) == CONFIG
    config_file.check_resume(str(tmp_path), CONFIG, seed=3, num_seeds=1)
    with pytest.raises(errors.ConfigError, match=r"has seed=3, the flags give 0; resume"):
        config_file.check_resume(str(tmp_path), CONFIG, seed=0, num_seeds=1)

    def messages(content):
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        said = []
        for read in (lambda: config_file.read(str(tmp_path)),
                     lambda: config_file.check_resume(str(tmp_path), CONFIG, 3, 1),
                     lambda: config_flags.read_config_file(path)):
            with pytest.raises(errors.ConfigError) as info:
                read()
            said.append(str(info.value))
        return said

    assert messages("[1, 2]") == [
        f"{path} is damaged (ValueError: a JSON list, not an object)",
        f"--resume: {path} is damaged (ValueError: a JSON list, not an object); restore it "
        "from a copy, or start a new run in another --workdir",
        f"--config={path} is not a run's config.json (a JSON object with agent, env and the "
        "config's fields)",
    ]
    damaged = messages('{"agent": "ppo"')
    assert damaged[0].startswith(f"{path} is damaged (JSONDecodeError: ")
    assert damaged[1].startswith(f"--resume: {path} is damaged (JSONDecodeError: ")
    assert damaged[2].startswith(f"--config={path} cannot be read as JSON (JSONDecodeError: ")
    no_agent = messages('{"env": "CartPole-v1"}')
    assert no_agent[0] == f"{path} is damaged (ValueError: no 'agent' entry)"
    assert no_agent[2].startswith(f"--config={path} is not a run's config.json")
    os.remove(path)
    for read, message in [
        (lambda: config_file.read(str(tmp_path)),
         f"--workdir={tmp_path} holds no run ({path} is missing)"),
        (lambda: config_file.check_resume(str(tmp_path), CONFIG, 3, 1),
         f"--resume: {tmp_path} holds no run (no config.json)"),
        (lambda: config_flags.read_config_file(path), f"--config={path} does not exist"),
    ]:
        with pytest.raises(errors.ConfigError) as info:
            read()
        assert str(info.value) == message
