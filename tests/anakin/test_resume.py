"""Checkpoint and resume: a run killed with SIGKILL and resumed ends where an
uninterrupted run ends (same params_sha256, same logged metrics); saves are atomic;
a non-finite loss stops the run and keeps the last good checkpoint."""

import dataclasses
import json
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist import agents, errors, parallel
from jaxrl_dist.anakin import on_device, training
from jaxrl_dist.run import checkpoint, config_file
from tests import multiprocess as mp

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound: see conftest

ARGS = ["--total_steps=40960", "--num_envs=4", "--rollout_len=32", "--checkpoint_every=20",
        "--log_points=16", "--eval_episodes=2", "--compilation_cache="]
TIMING = {"wall_s", "sps", "init_s", "compile_s", "train_s"}


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    # The resumed run finds its programs in the persistent cache the others filled.
    args = [*ARGS, f"--compilation_cache={tmp_path / 'xla'}"]
    reference = mp.start(mp.TRAIN, [*args, f"--workdir={full}"])
    victim = mp.start(mp.TRAIN, [*args, f"--workdir={killed}"])
    # Kill once a checkpoint exists, well before the end (320 updates, saves every 20).
    ckpts = os.path.join(killed, "checkpoints")
    deadline = time.time() + 300
    def saved():
        return [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []

    while not any(step >= 60 for step in saved()):
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[1][-2000:]
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    latest = max(saved())
    assert latest < 320, "the run finished before it was killed"
    # A save cut by a kill leaves only an orbax temporary directory: never used.
    partial = os.path.join(ckpts, f"{latest + 20}.orbax-checkpoint-tmp-1234")
    shutil.copytree(os.path.join(ckpts, str(latest)), partial)
    for root, _, files in os.walk(partial):
        for name in files:
            open(os.path.join(root, name), "w").close()

    resumed = mp.start(mp.TRAIN, [*args, f"--workdir={killed}", "--resume"])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert f"resumed at update {latest}" in out
    ref_out, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err[-3000:]

    a, b = records(full), records(killed)
    assert a[-1]["params_sha256"] == b[-1]["params_sha256"]
    assert a == b  # every log line, losses and returns included, bit for bit
    assert checkpoint.params_sha256(checkpoint.load_params(os.path.join(killed, "checkpoint"))) \
        == a[-1]["params_sha256"]


def test_resume_with_another_config_is_a_clear_error(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=32,
                                   total_steps=40960)
    config_file.write(str(workdir), config, agent="ppo", seed=0, num_seeds=1)
    proc = mp.start(mp.TRAIN, [*ARGS, f"--workdir={workdir}", "--resume", "--lr=0.1"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"error: --resume: the run in {workdir} has lr={config.lr}, the flags give 0.1; "
        "resume with the same settings"
    ]
    proc = mp.start(mp.TRAIN, [*ARGS, f"--workdir={tmp_path / 'empty'}", "--resume"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == f"error: --resume: {tmp_path / 'empty'} holds no run (no config.json)"


def apex_config(**overrides):
    return agents.default_config(
        "apex", "CartPole-v1", num_envs=8, rollout_len=8, total_steps=4096,
        buffer_capacity=2048, batch_size=32, learning_starts=128, **overrides,
    )


QUIET = dict(eval_episodes=2, log_points=8, progress_every_s=1e9, checkpoint_every=8)


class Crash(Exception):
    pass


def test_apex_resume_restores_replay_optimizer_and_rng(tmp_path):
    config = apex_config()
    settings = training.RunSettings(**QUIET)
    full = training.train(config, settings, str(tmp_path / "full"), log=lambda s: None)

    def crash_after_24_updates(env_steps, metrics):
        if env_steps >= 24 * config.steps_per_update:
            raise Crash

    with pytest.raises(Crash):
        training.train(config, settings, str(tmp_path / "cut"), log=lambda s: None,
                       progress_fn=crash_after_24_updates)
    resumed = training.train(
        config, training.RunSettings(**QUIET, resume=True), str(tmp_path / "cut"),
        log=lambda s: None,
    )
    assert resumed["resumed_from"] == 16  # the crash came before the save at update 24
    assert resumed["params_sha256"] == full["params_sha256"]
    assert records(tmp_path / "cut") == records(tmp_path / "full")


def test_ctrl_c_while_a_chunk_is_fetched_saves_the_newest_state_under_its_own_update(
    tmp_path,
):
    # Chunk i's metrics are fetched (and logged) after chunk i + 1 is dispatched, so a
    # Ctrl-C there finds the state one chunk ahead of the chunk being logged. That state
    # must be saved under its own update count, and no chunk logged twice. Constant lr,
    # so that a state saved under the wrong update would train differently when resumed.
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=8,
                                   total_steps=4 * 8 * 8, num_epochs=1, num_minibatches=1,
                                   anneal_lr=False)  # 8 updates, one per chunk
    settings = dict(num_devices=1, eval_episodes=2, log_points=8, checkpoint_every=100)
    full = training.train(config, training.RunSettings(**settings), str(tmp_path / "full"),
                          log=lambda s: None)

    pressed = []

    def ctrl_c_at_the_first_log_line(env_steps, metrics):
        if not pressed:
            pressed.append(env_steps)
            raise KeyboardInterrupt

    cut = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        training.train(config, training.RunSettings(**settings), cut, log=lambda s: None,
                       progress_fn=ctrl_c_at_the_first_log_line)
    steps = [r["env_steps"] for r in records(cut)]
    assert steps == sorted(set(steps)), steps  # no chunk logged twice
    resumed = training.train(config, training.RunSettings(**settings, resume=True), cut,
                             log=lambda s: None)
    assert resumed["resumed_from"] == 2  # update 1 was being logged, update 2 was done
    assert resumed["params_sha256"] == full["params_sha256"]
    assert records(cut) == records(tmp_path / "full")


def test_a_nan_loss_stops_the_run_naming_the_update_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    config = agents.default_config("ppo", "CartPole-v1", num_envs=4, rollout_len=16,
                                   total_steps=64 * 40)
    learner_cls = type(on_device.OnDeviceLearner(config, parallel.make_mesh(1)))
    original = learner_cls._local_update

    def poisoned(self, state, key):
        state, metrics = original(self, state, key)
        bad = state.update_step == 13  # the 13th update's loss and params become NaN
        params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), state.params)
        metrics = dict(metrics, **{"loss/total": jnp.where(bad, jnp.nan, metrics["loss/total"])})
        return state._replace(params=params), metrics

    monkeypatch.setattr(learner_cls, "_local_update", poisoned)
    workdir = str(tmp_path / "run")
    settings = training.RunSettings(eval_episodes=2, log_points=40, progress_every_s=1e9,
                                    checkpoint_every=5)
    with pytest.raises(errors.NonFiniteError) as info:
        training.train(config, settings, workdir, log=lambda s: None)
    message = str(info.value)
    assert "non-finite loss/total" in message and "(update 13, seed 0)" in message
    assert f"last good checkpoint: update 10 in {workdir}/checkpoints" in message
    assert checkpoint.RunCheckpointer(os.path.join(workdir, "checkpoints")).latest_step() == 10
    assert not os.path.exists(os.path.join(workdir, "checkpoint"))
    # The kept checkpoint is good: with the fault gone, the run resumes and finishes.
    monkeypatch.undo()
    summary = training.train(config, dataclasses.replace(settings, resume=True), workdir,
                             log=lambda s: None)
    assert summary["resumed_from"] == 10
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(summary["params"]))


def test_default_checkpoint_period_is_a_tenth_of_the_run_but_at_least_5e5_steps():
    period = training.checkpoint_period
    assert training.MIN_DEFAULT_CHECKPOINT_STEPS == 500_000
    # The default PPO CartPole run: 976 updates of 512 steps in chunks of 16 -> final only.
    assert period(976, 16, None, 512) > 976
    # MinAtar's 1e7 steps of 64 x 128: a tenth (122 updates, 1e6 steps) rounded to chunks.
    assert period(1220, 61, None, 64 * 128) == 122
    # 1e8 steps: a tenth of the run.
    assert period(12207, 1, None, 8192) == 1221
    # Steps of 1024 per update, chunks of 4: the 5e5-step floor (489 updates -> 492).
    assert period(2000, 4, None, 1024) == 492  # a tenth would be 200
    assert period(5000, 4, 7, 1024) == 7  # an explicit --checkpoint_every wins
