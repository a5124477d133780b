"""SIGTERM ends a run as Ctrl-C does, and ends the process even when it is blocked.

``handle()`` makes SIGTERM raise ``KeyboardInterrupt`` in the main thread, so the run
shell keeps the finished log points and, where the acting path can, a checkpoint;
scripts then exit with ``EXIT_CODE`` (143, what a shell reports for a process SIGTERM
ended). If the process still runs ``GRACE_S`` seconds later (its main thread blocked in
a C call: joining peers, a collective or a checkpoint barrier, where Python signal
handlers never run), a timer thread ends it with ``os._exit(EXIT_CODE)``.
"""

import os
import signal
import socket
import sys
import threading

GRACE_S = 10.0
EXIT_CODE = 143  # 128 + 15, what a shell reports for a process SIGTERM ended
_received = threading.Event()  # SIGTERM came: the run stops with EXIT_CODE
_grace_lock = threading.Lock()
_grace_timer: threading.Timer | None = None
_wakeup: tuple[socket.socket, socket.socket] | None = None


def handle() -> None:
    """Installs the SIGTERM handling (see the module docstring).

    Call from the main thread; again after ``jax.distributed.initialize``, whose
    preemption notifier takes SIGTERM over (and otherwise only logs it)."""
    global _wakeup
    if _wakeup is None:
        # Python's C-level handler writes each signal's number to this socket at once,
        # whatever the main thread is doing; the Python handler runs when it is free.
        reader, writer = _wakeup = socket.socketpair()
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=_watch_for_sigterm, args=(reader,), daemon=True,
                         name="sigterm-watch").start()
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    _start_grace_timer()  # also here: should another part replace the wakeup socket
    if _received.is_set():
        return  # already stopping: do not interrupt the checkpoint being saved
    _received.set()
    raise KeyboardInterrupt


def _watch_for_sigterm(reader: socket.socket) -> None:
    while True:
        data = reader.recv(64)
        if not data:
            return
        if signal.SIGTERM in data:
            _start_grace_timer()
            return


def _start_grace_timer() -> None:
    global _grace_timer
    with _grace_lock:
        if _grace_timer is None:
            _grace_timer = threading.Timer(GRACE_S, _exit_after_grace)
            _grace_timer.daemon = True
            _grace_timer.start()


def _exit_after_grace() -> None:
    sys.stderr.write(
        f"error: still running {GRACE_S:.0f} s after SIGTERM (blocked in a C "
        "call: joining, a collective or a checkpoint save); exiting without cleanup\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def received() -> bool:
    """Whether a SIGTERM came (the run is stopping with ``EXIT_CODE``)."""
    return _received.is_set()
