"""Type stubs of the native module ``pidring._native`` (re-exported by ``pidring``)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import AsyncIterator, ClassVar, Iterable, Iterator, Literal, Mapping, Optional, Sequence, Tuple, Type, Union

_StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_Seconds = float

Reason = Literal[
    "exited", "signaled", "status_unknown", "timed_out", "terminated", "drain_expired", "spawn_failed"
]

class Outcome:
    """Why and how a task ended (``Done.outcome``)."""

    reason: Reason
    returncode: Optional[int]
    """``subprocess`` convention: the exit code, ``-N`` for signal N, ``None`` if unknown."""
    exit_code: Optional[int]
    signal: Optional[int]
    duration: float
    """Seconds from spawn to the end."""
    stdout_bytes: int
    stderr_bytes: int
    tree_signalled: bool
    """pidring had to signal the tree (SIGTERM and/or SIGKILL)."""
    descendants_killed: int
    """Descendants (not the main process) alive when pidring signalled the tree."""
    errno: Optional[int]
    """The errno of a failed spawn (``reason == "spawn_failed"``)."""
    @property
    def ok(self) -> bool:
        """True when the main process exited on its own with status 0."""

class Output:
    """Output read from a task's stream: a chunk of at most 16 KiB, not a line."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    task: int
    """The task's id (``Task.id``)."""
    stream: str
    """``"stdout"``, ``"stderr"`` or ``"channel<k>"``."""
    data: bytes

class Exited:
    """The main process was reaped and every stream reached EOF."""

    __match_args__: ClassVar[Tuple[str, str]]
    task: int
    status: Optional[int]
    """``subprocess`` convention: the exit code, ``-N`` for signal N, ``None`` if unknown."""

class Done:
    """The task is over and its tree is gone: the last event of a task."""

    __match_args__: ClassVar[Tuple[str, str]]
    task: int
    outcome: Outcome

Event = Union[Output, Exited, Done]

class EventStream(Iterator[Event], AsyncIterator[Event]):
    """Iterator (``for``, GIL released while blocking) and async iterator (``async for``,
    driven by an eventfd the running loop watches) over a pool's events."""

    @property
    def timeout(self) -> Optional[float]: ...
    def __iter__(self) -> EventStream: ...
    def __next__(self) -> Event: ...
    def __aiter__(self) -> EventStream: ...
    async def __anext__(self) -> Event: ...
    def fileno(self) -> int:
        """The eventfd an asyncio loop waits on (used by ``async for``)."""
    def _poll(self) -> Optional[Event]: ...

class Task:
    """A task started by :meth:`Pool.spawn`."""

    @property
    def id(self) -> int:
        """Unique in the pool: the ``task`` of this task's events."""
    @property
    def pid(self) -> int:
        """The main process's pid (for display: signal through the methods below)."""
    def terminate(self) -> None:
        """SIGTERM to the whole tree, SIGKILL after the task's ``grace``."""
    def kill(self) -> None:
        """SIGKILL to the whole tree at once."""
    def signal(self, sig: int) -> None:
        """Sends ``sig`` to the main process (through its pidfd)."""
    def write(self, data: bytes) -> None:
        """Writes to the task's stdin. Not available yet: raises ``NotImplementedError``."""
    def close_stdin(self) -> None:
        """Closes the task's stdin. Not available yet: raises ``NotImplementedError``."""
    def send(self, channel: int, frame: bytes) -> None:
        """Sends a frame on a channel. Not available yet: raises ``NotImplementedError``."""

class Pool:
    """A pool of worker threads supervising child processes and their whole trees.

    Leaving a ``with`` block, :meth:`close`, or the interpreter's exit kills every tree.
    """

    def __init__(
        self,
        workers: Optional[int] = None,
        containment: Literal["auto", "cgroup", "process-group"] = "auto",
        backend: Literal["auto", "uring", "epoll"] = "auto",
        *,
        max_tasks: Optional[int] = None,
        subreaper: bool = False,
    ) -> None:
        """``subreaper=True``: orphaned descendants come back to this process and the pool
        reaps them, and every other child of this process that exits too (``subprocess``'s
        included): use it only where pidring starts all of them."""
    def spawn(
        self,
        argv: Sequence[_StrOrBytesPath],
        env: Optional[Mapping[Union[str, bytes], Union[str, bytes]]] = None,
        cwd: Optional[_StrOrBytesPath] = None,
        timeout: Optional[_Seconds] = None,
        grace: _Seconds = 5.0,
        drain: _Seconds = 1.0,
        channels: int = 0,
        stdin: bool = False,
        *,
        extra_env: Optional[Mapping[Union[str, bytes], Union[str, bytes]]] = None,
        stdout: Literal["capture", "inherit", "null"] = "capture",
        stderr: Literal["capture", "inherit", "null"] = "capture",
        after_exit: Literal["kill_tree", "drain_until_eof"] = "kill_tree",
        session: Literal["new", "group", "foreground"] = "new",
        pids_max: Optional[int] = None,
        memory_max: Optional[int] = None,
        ignore_signals: Iterable[int] = ...,
        block_signals: Iterable[int] = ...,
    ) -> Task:
        """Starts ``argv`` and returns its task once the program runs; raises a
        ``SpawnError`` subclass otherwise."""
    def events(self, timeout: Optional[_Seconds] = None) -> EventStream:
        """Every task's events; with ``timeout``, iteration ends after that long without one."""
    def close(self) -> None:
        """Kills every tree, waits for them, stops the workers. Idempotent."""
    def __enter__(self) -> Pool: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def backend(self) -> Literal["uring", "epoll"]: ...
    @property
    def backend_reason(self) -> str: ...
    @property
    def containment(self) -> Literal["cgroup", "process-group"]: ...
    @property
    def containment_reason(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def workers(self) -> int: ...
    def stats(self) -> dict[str, int]: ...

def _close_all() -> None: ...
