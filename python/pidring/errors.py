"""The exceptions pidring raises, one family per operation.

``Pool()`` raises :class:`BuildError` subclasses, ``Pool.spawn`` raises :class:`SpawnError`
subclasses, requests on a :class:`~pidring.Task` raise :class:`ControlError` subclasses, and
writing to a task (``Task.write``, ``close_stdin``, ``send``) raises :class:`WriteError`
subclasses.
Where a standard exception fits, the pidring exception also derives from it, so code written
for :mod:`subprocess` keeps working: a program that does not exist raises
:class:`ProgramNotFoundError`, which is a :class:`FileNotFoundError` with ``errno``,
``strerror`` and ``filename`` set, as ``subprocess.Popen`` would raise.
"""

from __future__ import annotations

__all__ = [
    "PidringError",
    "BuildError",
    "BackendUnavailableError",
    "InvalidOptionError",
    "PoolSetupError",
    "ContainmentError",
    "PoolContainmentError",
    "SpawnError",
    "ProgramNotFoundError",
    "ProgramPermissionError",
    "NotExecutableError",
    "InvalidSpecError",
    "TooManyFilesError",
    "TooManyProcessesError",
    "PoolFullError",
    "TaskContainmentError",
    "SpawnOSError",
    "ControlError",
    "InvalidSignalError",
    "PoolClosedError",
    "WriteError",
    "StdinNotCapturedError",
    "NoSuchChannelError",
    "FrameTooLargeError",
    "StreamClosedError",
    "TaskBrokenPipeError",
    "WriteOSError",
]


class PidringError(Exception):
    """Base class of every exception pidring raises."""


# --- Pool() -------------------------------------------------------------------------------


class BuildError(PidringError):
    """The pool could not be started."""


class BackendUnavailableError(BuildError):
    """The requested backend (``"uring"`` or ``"epoll"``) cannot run here; the message says why."""


class InvalidOptionError(BuildError, ValueError):
    """An option of ``Pool()`` is out of range (for example ``workers=0``)."""


class PoolSetupError(BuildError, OSError):
    """The system refused what the pool needs (an io_uring ring, a worker thread)."""


class ContainmentError(PidringError):
    """Whole-tree containment could not be set up (a cgroup, a controller)."""


class PoolContainmentError(BuildError, ContainmentError):
    """``Pool()`` could not set up the containment it was asked for (e.g. ``containment="cgroup"``
    where no cgroup v2 hierarchy is writable)."""


# --- Pool.spawn() -------------------------------------------------------------------------


class SpawnError(PidringError):
    """``Pool.spawn`` could not start the task. The pool and its other tasks are unaffected."""


class ProgramNotFoundError(SpawnError, FileNotFoundError):
    """The program does not exist (``ENOENT``), on ``PATH`` or at the path given."""


class ProgramPermissionError(SpawnError, PermissionError):
    """The program exists but cannot be executed (``EACCES``/``EPERM``)."""


class NotExecutableError(SpawnError, OSError):
    """The file is not in an executable format (``ENOEXEC``)."""


class InvalidSpecError(SpawnError, ValueError):
    """The task's arguments are invalid (a NUL byte, a bad signal number, ...)."""


class TooManyFilesError(SpawnError, OSError):
    """Out of file descriptors (``EMFILE``/``ENFILE``)."""


class TooManyProcessesError(SpawnError, OSError):
    """The system refused a new process (``EAGAIN``): a process or memory limit."""


class PoolFullError(SpawnError):
    """The pool holds as many live tasks as it can (see ``Pool.capacity``)."""


class TaskContainmentError(SpawnError, ContainmentError):
    """The task's own containment could not be set up (its cgroup, ``pids_max``, ``memory_max``)."""


class SpawnOSError(SpawnError, OSError):
    """Any other system error while starting the task; ``errno`` says which."""


# --- Task requests ------------------------------------------------------------------------


class ControlError(PidringError):
    """A request to a task could not be delivered."""


class InvalidSignalError(ControlError, ValueError):
    """Not a signal number (1 to 64)."""


# --- Writing to a task ---------------------------------------------------------------------


class WriteError(PidringError):
    """Writing to a task failed: ``Task.write``, ``Task.close_stdin`` or ``Task.send``.

    These fail at once, when the request cannot be queued; bytes that were queued and could
    not be written are reported by the ``StdinClosed`` and ``ChannelClosed`` events."""


class StdinNotCapturedError(WriteError, ValueError):
    """The task's stdin is not a pipe pidring writes: spawn it with ``stdin=True``."""


class NoSuchChannelError(WriteError, ValueError):
    """The task has no framed channel with this index (``spawn(channels=n)`` gives 0 to n - 1)."""


class FrameTooLargeError(WriteError, ValueError):
    """A frame longer than the channel's maximum (``spawn(max_frame=...)``, default 16 MiB).

    ``length`` is the frame's length, ``max_frame`` the maximum."""

    def __init__(self, message: str, length: int, max_frame: int):
        super().__init__(message)
        self.length = length
        self.max_frame = max_frame

    def __reduce__(self):
        return (type(self), (str(self), self.length, self.max_frame))


class StreamClosedError(WriteError, BrokenPipeError):
    """Stdin or the channel is closed: by ``close_stdin``, by the child (it closed its end
    of a channel), or because the task ended. ``errno`` is ``EPIPE``."""


class TaskBrokenPipeError(StreamClosedError):
    """The task no longer reads it: a write found the pipe or socket broken (``EPIPE``), the
    child having closed its end or exited. pidring never lets ``SIGPIPE`` reach this process."""


class WriteOSError(WriteError, OSError):
    """Writing failed with another system error; ``errno`` says which."""


class PoolClosedError(SpawnError, ControlError, WriteError):
    """The pool is shut down: raised by ``spawn`` and by requests to its tasks."""
