"""Faults of a run's processes end it fast, with one line, instead of hanging.

Processes given different (unshared) --workdirs stop at start-up (before, they trained
to the end and hung at the first checkpoint save); a process whose peers never come
gives up after --startup_timeout_s; SIGTERM ends a run within 10 s (exit 143), with a
checkpoint that --resume continues, even when the process is blocked in a collective.
"""

import json
import signal
import subprocess
import time

import pytest

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


# Known race (seen once in a loaded .ci/run): a SIGTERM that lands inside an orbax save
# interrupts it, and the interrupt's own save then fails on the half-made temporary
# directory (OSError: Directory not empty) instead of exiting 143. Slow until fixed.
@pytest.mark.slow
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
