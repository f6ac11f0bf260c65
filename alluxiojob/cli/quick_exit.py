"""A command's exit without the interpreter's teardown.

When a command has finished, Python's own exit waits for the threads that are not
daemons, runs the ``atexit`` handlers, flushes stdout and stderr, and then tears down
every module it imported and frees their objects. With the 250 or so modules a command
imports, that last part alone took 30 ms or more on a loaded two-core machine: a tenth of
a small ``job load --wait``, and nothing a user sees or a script reads.

``exit_now`` does the first three as Python does and then ends the process with
``os._exit``. Whenever it could not do exactly what Python would (a thread other than
the main one still running, a stream that cannot be flushed, an exit status Python
would print), it leaves the exit to Python.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def _running_threads() -> bool:
    """A thread Python's exit would wait for (every thread but the main one and daemons)."""
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def exit_now(code: object) -> NoReturn:
    """End the process with ``SystemExit(code)``'s status, skipping the teardown."""
    if not (code is None or isinstance(code, int)) or _running_threads():
        raise SystemExit(code)  # Python prints a text status; threads are waited for
    atexit._run_exitfuncs()
    atexit._clear()  # run once, even if Python's exit follows
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # a closed pipe (``| head``), a closed stream
        raise SystemExit(code) from None  # Python reports it, with its exit status 120
    os._exit(code or 0)
