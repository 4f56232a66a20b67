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

A task can also be talked to: ``spawn(stdin=True)`` gives it a stdin pipe
(:meth:`Task.write`, :meth:`Task.close_stdin`), ``spawn(channels=n)`` gives it ``n`` framed
request channels (the child finds them in ``PIDRING_CHANNEL_FDS``; each frame it sends comes
as a :class:`Message` event, :meth:`Task.send` answers).
"""

from __future__ import annotations

import atexit as _atexit

from . import errors
from ._native import (
    ChannelClosed,
    Done,
    EventStream,
    Exited,
    Message,
    Outcome,
    Output,
    Pool,
    StdinClosed,
    Task,
    _close_all,
)
from .errors import *  # noqa: F401,F403  (the exception classes, listed in errors.__all__)

__all__ = [
    "Pool",
    "Task",
    "EventStream",
    "Output",
    "Message",
    "ChannelClosed",
    "StdinClosed",
    "Exited",
    "Done",
    "Outcome",
    "errors",
    *errors.__all__,
]

__version__ = "0.1.0"

# No task outlives the interpreter: pools still open at exit kill their trees.
_atexit.register(_close_all)
