"""Ending a finished process without the interpreter's teardown.

Once a run has written and closed everything, what remains of a normal exit is
the interpreter freeing the modules and objects of jax, flax and orbax, about
half a second of CPU on a small machine (``docs/benchmarks/compile_time.md``),
and on a loaded 2-core machine long enough to miss a Ctrl-C deadline.
"""

import atexit
import logging
import os
import sys


def exit_now(code: int) -> None:
    """Runs the atexit handlers, flushes the logs and standard streams, then ``os._exit(code)``.

    Only for a process whose work is done: threads are joined and files closed.
    Never returns.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
