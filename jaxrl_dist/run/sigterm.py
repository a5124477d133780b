"""SIGTERM ends a run as Ctrl-C does, and ends the process even when it is blocked.

``handle()`` makes SIGTERM raise ``KeyboardInterrupt`` in the main thread, so the run
shell keeps the finished log points and, where the acting path can, a checkpoint;
scripts then exit with ``EXIT_CODE`` (143, what a shell reports for a process SIGTERM
ended). If the process still runs ``GRACE_S`` seconds later (its main thread blocked in
a C call: joining peers, a collective or a checkpoint barrier, where Python signal
handlers never run), a timer thread ends it with ``os._exit(EXIT_CODE)``.

``deferred()`` holds both SIGTERM's and Ctrl-C's (SIGINT's) ``KeyboardInterrupt`` back
while a checkpoint is written, and raises it as soon as the write is done: an orbax save
that an exception cuts short leaves its manager and a half-made temporary directory
behind, and the next save (the one the interrupt itself makes) then fails. The 10 s
timer still runs from the SIGTERM.
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
_deferring = 0  # depth of deferred() blocks open in the main thread
_held = False  # a SIGTERM or SIGINT came inside them: raised when the outermost ends


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
    global _held
    _start_grace_timer()  # also here: should another part replace the wakeup socket
    if _received.is_set():
        return  # already stopping: do not interrupt the checkpoint being saved
    _received.set()
    if _deferring:
        _held = True
        return
    raise KeyboardInterrupt


def _on_sigint_deferred(signum, frame):
    global _held
    _held = True


def deferred() -> "_Deferred":
    """``with sigterm.deferred():`` holds SIGTERM's and Ctrl-C's ``KeyboardInterrupt``
    back until the block ends (see ``_Deferred``)."""
    return _Deferred()


class _Deferred:
    """Holds SIGTERM's and Ctrl-C's ``KeyboardInterrupt`` back until the block ends.

    For a block an exception must not cut short (a checkpoint write). A SIGTERM or
    SIGINT that comes inside it is recorded (SIGTERM also sets ``received()`` and starts
    the 10 s timer at once) and raised as ``KeyboardInterrupt`` when the outermost
    block ends normally; when the block raises, its exception goes on instead. Blocks
    nest. Ctrl-C is held only where SIGINT raises ``KeyboardInterrupt`` (Python's
    default handler); outside the main thread, where no signal handler runs, the block
    runs unchanged.
    """

    def __enter__(self):
        global _deferring, _held
        self._main = threading.current_thread() is threading.main_thread()
        if not self._main:
            return self
        self._sigint = None
        if not _deferring:
            _held = False  # one held before, whose raise another signal cut short, is spent
        _deferring += 1
        try:
            if _deferring == 1 and (
                    signal.getsignal(signal.SIGINT) is signal.default_int_handler):
                self._sigint = signal.signal(signal.SIGINT, _on_sigint_deferred)
        except BaseException:  # a Ctrl-C before the swap: the block never starts
            _deferring -= 1
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        global _deferring, _held
        if not self._main:
            return False
        try:  # SIGTERM is still held here; a SIGINT after the handler's return raises
            if self._sigint is not None:
                signal.signal(signal.SIGINT, self._sigint)
        finally:
            _deferring -= 1
        if _deferring:
            return False
        held, _held = _held, False
        if held and exc_type is None:
            raise KeyboardInterrupt
        return False


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
