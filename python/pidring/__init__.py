"""pidring: supervise thousands of child processes on Linux from one Python process, and
never lose one.

A :class:`Pool` runs worker threads (io_uring rings) that supervise every task's whole
process tree: a kill reaches the task's descendants too (a cgroup v2 per task, or its
process group), every signal goes through a pidfd, and output is read without a thread or
a file descriptor per task in this process::

    import pidring

    with pidring.Pool() as pool:
        task = pool.spawn(["sh", "-c", "echo hello; sleep 1"], timeout=10)
        for event in pool.events():
            print(event)
            if isinstance(event, pidring.Done) and event.task == task.id:
                break

``async for event in pool.events()`` works the same in an asyncio loop. The GIL is released
while waiting and while the pool works.
"""

from __future__ import annotations

import atexit as _atexit

from . import errors
from ._native import (
    Done,
    EventStream,
    Exited,
    Outcome,
    Output,
    Pool,
    Task,
    _close_all,
)
from .errors import *  # noqa: F401,F403  (the exception classes, listed in errors.__all__)

__all__ = [
    "Pool",
    "Task",
    "EventStream",
    "Output",
    "Exited",
    "Done",
    "Outcome",
    "errors",
    *errors.__all__,
]

__version__ = "0.1.0"

# No task outlives the interpreter: pools still open at exit kill their trees.
_atexit.register(_close_all)
