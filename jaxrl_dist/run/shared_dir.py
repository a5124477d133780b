"""Start-up agreement of a multi-process run: one shared ``--workdir``, one outcome.

Every process of a ``jax.distributed`` run writes its shards of each checkpoint
into the same ``checkpoints/`` directory, and orbax waits there for all of them:
processes given different (unshared) directories would train to the end and then
hang at the first save. ``check`` finds this at start-up, before anything compiles:

1. process 0 writes a random token into ``<workdir>/.jaxrl_dist_token`` and
   publishes it in the coordinator's key-value store;
2. every other process must read that token from its own ``--workdir`` within
   ``timeout_s`` seconds (polling: a network file system can show a new file late);
3. every process publishes its outcome and reads everyone's, so that all of them
   stop with the same one-line error, or all go on; process 0 then removes the
   token (one left behind by a killed run is harmless: the next run replaces it).

``report_failure`` publishes a start-up error of this process (a bad flag, a
``--resume`` that finds no run) so that the processes waiting in ``check`` stop
with it too instead of waiting for a peer that has exited.

Process 0 hosts the coordinator: when it exits, every process still joined aborts
with JAX's "another task died" and a stack trace. So on the way out process 0 waits
(a bounded time) until the others have read the outcome and left.
"""

import contextlib
import json
import os
import secrets
import time

from jaxrl_dist import errors

TOKEN = ".jaxrl_dist_token"
_KEYS = "jaxrl_dist/startup/"  # this run's keys in the coordinator's key-value store
_OK = "ok"


def check(workdir: str, timeout_s: float = 30.0, peer_wait_s: float = 120.0,
          poll_s: float = 0.1) -> None:
    """Checks that every process's ``workdir`` is one shared directory (a collective:
    every process calls it; a no-op in a single-process run).

    Args:
      workdir: this process's ``--workdir`` (it exists and is writable).
      timeout_s: seconds another process may take to see process 0's token.
      peer_wait_s: seconds to wait for another process to reach this check.
      poll_s: seconds between looks at the token file and the key-value store.

    Raises:
      ConfigError: on every process alike: a process does not see the token (the
        directories are not one), or one reported a start-up error
        (``report_failure``), or one did not reach the check within ``peer_wait_s``.
        Call ``report_failure`` with its message before exiting.
    """
    client, me, n = _client()
    if client is None:
        return
    deadline = time.monotonic() + peer_wait_s
    path = os.path.join(os.path.abspath(workdir), TOKEN)
    if me == 0:
        nonce = secrets.token_hex(16)
        outcome = _write_token(path, nonce)
        if outcome == _OK:
            client.key_value_set(_KEYS + "token",
                                 json.dumps({"nonce": nonce, "path": path}))
    else:
        outcome = _see_token(client, path, me, timeout_s, poll_s, deadline)
    client.key_value_set(_KEYS + f"result/{me}", outcome)
    results = _wait_for(client, "result/", n, poll_s, time.monotonic() + peer_wait_s)
    if me == 0:
        _remove(path)
    failed = sorted((i != me, i) for i in range(n) if results.get(i) != _OK)
    if not failed:
        return
    i = failed[0][1]  # this process's own failure first, else the lowest process's
    message = results.get(i)
    if message is None:
        raise errors.ConfigError(
            f"process {i} did not reach the start-up check within {peer_wait_s:.0f} s "
            f"(--workdir={workdir})"
        )
    raise errors.ConfigError(message)


def report_failure(message: str, wait_s: float = 30.0, poll_s: float = 0.1) -> None:
    """Publishes this process's start-up error ``message`` so that every process
    waiting in ``check`` stops with it; call it before exiting on any start-up error
    (no-op in a single-process run or before ``jax.distributed`` is joined).

    On process 0 (the coordinator's host) it then waits up to ``wait_s`` seconds for
    the other processes to read an outcome and leave, so that they end with their
    own one line rather than JAX's abort. Never raises.
    """
    client, me, n = _client()
    if client is None:
        return
    try:
        if _try_get(client, _KEYS + f"result/{me}") is None:  # check() may have set it
            client.key_value_set(_KEYS + f"result/{me}", f"process {me}: {message}")
        client.key_value_set(_KEYS + f"left/{me}", _OK)
        if me != 0:
            return
        _wait_for(client, "left/", n, poll_s, time.monotonic() + wait_s, skip=0)
        time.sleep(0.5)  # each has published "left" just before its os._exit
    except Exception:  # noqa: BLE001 - the caller exits with its own message anyway
        return


def _client():
    """``(client, process index, process count)``: the coordinator's key-value client
    (``None`` outside a ``jax.distributed`` run). From JAX's own state, which has no
    public accessor; unlike ``jax.process_index()`` it does not create the backend
    (which waits for every process)."""
    from jax._src import distributed

    state = distributed.global_state
    return state.client, state.process_id, state.num_processes


def _write_token(path: str, nonce: str) -> str:
    """Writes ``nonce`` to ``path`` atomically; ``_OK`` or the one-line failure."""
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(nonce)
        os.replace(path + ".tmp", path)
    except OSError as e:
        return f"process 0 cannot write its token file {path}: {e.strerror or e}"
    return _OK


def _see_token(client, path: str, me: int, timeout_s: float, poll_s: float,
               deadline: float) -> str:
    """Waits for process 0's token and for it in ``path``; ``_OK`` or the one-line failure."""
    while True:
        # Process 0 publishes its token before its result: read the result first, so
        # that a result seen with no token after it means process 0 stopped early.
        stopped = _try_get(client, _KEYS + "result/0") is not None
        token = _try_get(client, _KEYS + "token")
        if token is not None:
            break
        if stopped:
            return _OK  # process 0 stopped before writing; its own error is reported
        if time.monotonic() > deadline:
            return f"process {me} got no token from process 0 (did it stop?)"
        time.sleep(poll_s)
    expected = json.loads(token)
    seen, end = None, time.monotonic() + timeout_s
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                seen = f.read()
        except OSError:
            seen = None
        if seen == expected["nonce"]:
            return _OK
        if time.monotonic() > end:
            break
        time.sleep(poll_s)
    theirs = os.path.dirname(expected["path"])
    what = ("does not see process 0's token file" if seen is None else
            "sees another run's token instead of process 0's in")
    return (
        f"--workdir={theirs} is not one shared directory: process {me} {what} "
        f"{expected['path']} within {timeout_s:.0f} s (its own --workdir is "
        f"{os.path.dirname(path)}); give every process the same shared --workdir"
    )


def _wait_for(client, kind: str, n: int, poll_s: float, deadline: float,
              skip: int | None = None) -> dict[int, str]:
    """``{process: value}`` of the keys ``kind<i>`` once all ``n`` (but ``skip``) are
    published, or the ones there at ``deadline``."""
    want = set(range(n)) - {skip}
    while True:
        found = {int(key.rsplit("/", 1)[1]): value
                 for key, value in client.key_value_dir_get(_KEYS + kind)}
        if want <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(poll_s)


def _try_get(client, key: str) -> str | None:
    import jax

    try:
        return client.key_value_try_get(key)
    except jax.errors.JaxRuntimeError:
        return None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
