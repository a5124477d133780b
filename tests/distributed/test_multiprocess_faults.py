"""Faults of a run's processes end it fast, with one line, instead of hanging.

Processes given different (unshared) --workdirs stop at start-up (before, they trained
to the end and hung at the first checkpoint save); a process whose peers never come
gives up after --startup_timeout_s; SIGTERM ends a run within 10 s (exit 143), with a
checkpoint that --resume continues, even when the process is blocked in a collective.
A SIGTERM or Ctrl-C that lands inside a checkpoint save is raised once the save is done.
"""

import json
import os
import signal
import subprocess
import threading
import time

import jax
import orbax.checkpoint as ocp
import pytest

from jaxrl_dist import agents
from jaxrl_dist.anakin import training
from jaxrl_dist.run import checkpoint, sigterm
from tests import multiprocess as mp

TINY = ["--total_steps=4096", "--num_envs=8", "--rollout_len=64", "--eval_episodes=1",
        "--log_points=2", "--compilation_cache="]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def start_pair(args: list[str], extra: dict[int, list[str]]) -> list[subprocess.Popen]:
    """Two processes of train.py joined at a localhost coordinator; faulthandler on, so
    that ``finish`` can show where one hangs."""
    address = f"localhost:{mp.free_port()}"
    return [mp.start(mp.TRAIN, [*args, f"--coordinator_address={address}",
                                "--num_processes=2", f"--process_id={i}", *extra[i]],
                     env_extra={"PYTHONFAULTHANDLER": "1"}) for i in range(2)]


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """``(returncode, stdout, stderr)`` of each; should one still run after ``timeout``
    seconds, SIGABRT makes each print its threads' stacks and the test fails with them."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGABRT)
        stacks = [p.communicate(timeout=30)[1][-6000:] for p in procs]
        pytest.fail(f"still running after {timeout} s; stderr:\n" + "\n----\n".join(stacks))
    return [(p.returncode, *p.communicate()) for p in procs]


def test_processes_with_different_workdirs_stop_at_start_up_with_one_line(tmp_path):
    t0 = time.monotonic()
    procs = start_pair(TINY, {0: [f"--workdir={tmp_path / 'a'}"],
                              1: [f"--workdir={tmp_path / 'b'}"]})
    results = finish(procs, timeout=150)
    elapsed = time.monotonic() - t0
    print(f"both stopped after {elapsed:.1f} s")  # shown with -rP
    message = (f"error: --workdir={tmp_path / 'a'} is not one shared directory: process 1 "
               f"does not see process 0's token file {tmp_path / 'a' / '.jaxrl_dist_token'}")
    for rc, out, err in results:
        assert rc == 2, err[-3000:]
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith(message), err[-3000:]
        assert lines[0].endswith("give every process the same shared --workdir")
        assert "env_steps" not in out
    assert error_lines(results[0][2]) == error_lines(results[1][2])
    assert elapsed < 60
    # Nothing compiled or written; process 0 removed its token.
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


def test_a_start_up_error_of_one_process_stops_the_others_with_it(tmp_path):
    """Process 1 cannot create its --workdir: process 0, waiting at the start-up check,
    stops with process 1's line instead of waiting for a peer that has exited."""
    procs = start_pair(TINY, {0: [f"--workdir={tmp_path / 'run'}"],
                              1: ["--workdir=/proc/jaxrl_dist_test"]})
    (rc0, _, err0), (rc1, _, err1) = finish(procs, timeout=120)
    message = "--workdir=/proc/jaxrl_dist_test cannot be created: No such file or directory"
    assert (rc0, rc1) == (2, 2), err0[-3000:] + err1[-3000:]
    assert error_lines(err1) == [f"error: {message}"], err1[-3000:]
    assert error_lines(err0) == [f"error: process 1: {message}"], err0[-3000:]


@pytest.mark.parametrize("process_id, message", [
    (0, "not all --num_processes=2 processes joined the coordinator at {address} within 5 s "
        "(this is process 0)"),
    (1, "process 1 found no coordinator at --coordinator_address={address} within 5 s"),
])
def test_a_process_without_its_peers_gives_up_after_startup_timeout(tmp_path, process_id,
                                                                      message):
    address = f"localhost:{mp.free_port()}"
    t0 = time.monotonic()
    proc = mp.start(mp.TRAIN, [*TINY, f"--workdir={tmp_path / 'run'}", "--num_processes=2",
                               f"--process_id={process_id}", f"--coordinator_address={address}",
                               "--startup_timeout_s=5"])
    _, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: --startup_timeout_s=5: {message.format(address=address)}")
    assert "start all 2 processes (--process_id=0..1)" in lines[0]
    assert 5 <= elapsed < 40  # 5 s of waiting after python and jax start
    assert not (tmp_path / "run").exists()


def wait_for_progress(proc: subprocess.Popen, timeout: float = 180) -> None:
    """Reads ``proc``'s stdout up to its first progress line (``env_steps ...``)."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith("env_steps"):
            return
        assert time.monotonic() < deadline
    pytest.fail(f"no progress line; stderr:\n{proc.stderr.read()[-3000:]}")


def test_sigterm_mid_training_exits_143_within_10_s_and_the_run_resumes(tmp_path):
    workdir = tmp_path / "run"
    args = [*TINY, "--total_steps=204800", "--log_points=100", "--checkpoint_every=8",
            f"--workdir={workdir}"]
    proc = mp.start(mp.TRAIN, args)
    try:
        wait_for_progress(proc)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    print(f"stopped {stopped_s:.2f} s after SIGTERM")  # shown with -rP
    assert rc == 143, err[-3000:]
    assert stopped_s < 10
    assert "terminated (SIGTERM); state saved in checkpoints/" in err
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved, list((workdir / "checkpoints").iterdir())

    resumed = mp.start(mp.TRAIN, [*args, "--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert f"resumed at update {saved[-1]}" in out
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] == 204800


def test_sigterm_ends_a_process_blocked_in_a_collective_within_10_s(tmp_path):
    """Process 1 stopped (SIGSTOP): process 0 waits inside a collective, where Python
    signal handlers never run; SIGTERM still ends it 10 s later, exit code 143."""
    procs = mp.start_processes(mp.TRAIN, [
        *TINY, "--total_steps=20480000", "--log_points=4000", "--heartbeat_timeout_s=100",
        f"--workdir={tmp_path / 'run'}"], 2)
    try:
        wait_for_progress(procs[0])
        procs[1].send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        t0 = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        rc = procs[0].wait(timeout=60)
        stopped_s = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    err = procs[0].stderr.read()
    print(f"stopped {stopped_s:.2f} s after SIGTERM")  # shown with -rP
    assert rc == 143, err[-3000:]
    assert 9 < stopped_s < 12
    assert "error: still running 10 s after SIGTERM" in err


# ------------------------------------------------------- a signal inside a save (in-process)
# 8 updates of one chunk each, a checkpoint every 2; constant lr, so that a state saved
# under the wrong update would train differently when resumed.
SAVE_CONFIG = dict(num_envs=4, rollout_len=8, total_steps=4 * 8 * 8, num_epochs=1,
                   num_minibatches=1, anneal_lr=False)
SAVE_SETTINGS = dict(num_devices=1, eval_episodes=2, log_points=8, checkpoint_every=2)
TIMING = {"wall_s", "sps", "init_s", "compile_s", "train_s"}


def records(workdir) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run: ``(summary, workdir)``, compiled as under ``fast_compile``
    (a module-scoped fixture runs before that function-scoped one)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    config = agents.default_config("ppo", "CartPole-v1", **SAVE_CONFIG)
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        summary = training.train(config, training.RunSettings(**SAVE_SETTINGS), str(workdir),
                                 log=lambda s: None)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
    return summary, workdir


@pytest.fixture
def signals_as_in_train_py(monkeypatch):
    """SIGTERM handled by ``sigterm`` (its 10 s exit timer recorded, not started) and
    SIGINT raising ``KeyboardInterrupt``, in this process for one test; the list of the
    timer's starts."""
    starts = []
    monkeypatch.setattr(sigterm, "_received", threading.Event())
    monkeypatch.setattr(sigterm, "_start_grace_timer", lambda: starts.append(1))
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, sigterm._on_sigterm),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield starts
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_checkpoint_save_stops_the_run_after_the_save_and_it_resumes(
    tmp_path, monkeypatch, uninterrupted, signals_as_in_train_py, signum
):
    """The signal comes while the checkpoint of update 4 is written (orbax has written
    it; the manager has not finished). Before ``sigterm.deferred`` its KeyboardInterrupt
    cut the save short there, the interrupt's own save of the same state then failed
    (StepAlreadyExistsError here; OSError: Directory not empty when it lands while
    orbax's writer threads still fill the temporary directory), and the process exited
    1 instead of 143 (SIGTERM) or 130 (Ctrl-C)."""
    original = ocp.CheckpointManager.save
    sent = []

    def save_then_signal(self, step, *args, **kwargs):
        saved = original(self, step, *args, **kwargs)
        if step == 4 and not sent:
            sent.append(step)
            os.kill(os.getpid(), signum)  # its Python handler runs at once, in this thread
        return saved

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_then_signal)
    config = agents.default_config("ppo", "CartPole-v1", **SAVE_CONFIG)
    log = []
    with pytest.raises(KeyboardInterrupt):
        training.train(config, training.RunSettings(**SAVE_SETTINGS), str(tmp_path),
                       log=log.append)
    assert sent == [4]
    assert sigterm.received() == (signum == signal.SIGTERM)
    assert len(signals_as_in_train_py) == (signum == signal.SIGTERM)  # the 10 s timer
    assert f"interrupted: last good checkpoint: update 4 in {tmp_path / 'checkpoints'}" in log
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]  # no temporary dir
    assert [r["env_steps"] for r in records(tmp_path)] == [32, 64, 96, 128]
    monkeypatch.setattr(ocp.CheckpointManager, "save", original)

    summary, workdir = uninterrupted
    resumed = training.train(config, training.RunSettings(**SAVE_SETTINGS, resume=True),
                             str(tmp_path), log=lambda s: None)
    assert resumed["resumed_from"] == 4
    assert resumed["params_sha256"] == summary["params_sha256"]
    assert records(tmp_path) == records(workdir)
    assert checkpoint.RunCheckpointer(str(tmp_path / "checkpoints")).steps() == [8, 6]
