"""The parameter server: versions, exact-version waits, timeouts and close."""

import threading
import time

import pytest

from jaxrl_dist.sebulba.param_server import ParamServer


def test_latest_and_exact_versions():
    server = ParamServer(keep=2)
    assert server.latest(timeout=0.01) is None  # nothing published yet
    server.publish(0, "p0")
    server.publish(1, "p1")
    assert server.latest(timeout=0.01) == (1, "p1")
    assert server.get(0, timeout=0.01) == (0, "p0")
    server.publish(2, "p2")
    with pytest.raises(KeyError, match="no longer kept"):
        server.get(0, timeout=0.01)
    assert server.get(1, timeout=0.01) == (1, "p1")
    with pytest.raises(ValueError, match="not newer"):
        server.publish(2, "again")


def test_waiting_for_a_future_version_times_out_then_wakes_on_publish():
    server = ParamServer()
    server.publish(0, "p0")
    t0 = time.perf_counter()
    assert server.get(1, timeout=0.05) is None
    assert time.perf_counter() - t0 >= 0.04
    got = []
    waiter = threading.Thread(target=lambda: got.append(server.get(1, timeout=5.0)))
    waiter.start()
    time.sleep(0.05)
    server.publish(1, "p1")
    waiter.join(1.0)
    assert got == [(1, "p1")]


def test_close_wakes_waiters_at_once():
    server = ParamServer()
    got = []
    waiter = threading.Thread(target=lambda: got.append(server.get(5, timeout=30.0)))
    waiter.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    server.close()
    waiter.join(1.0)
    assert not waiter.is_alive() and got == [None]
    assert time.perf_counter() - t0 < 1.0
