"""Type stubs of the native module ``pidring._native`` (re-exported by ``pidring``)."""

from __future__ import annotations

import os
from types import TracebackType
from .errors import WriteError
from typing import AsyncIterator, ClassVar, Iterable, Iterator, Literal, Mapping, Optional, Sequence, Tuple, Type, Union

_BytesLike = Union[bytes, bytearray, memoryview]
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
    """Output read from a task's stream: a chunk of at most 64 KiB as read, not a line."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    task: int
    """The task's id (``Task.id``)."""
    stream: str
    """``"stdout"``, ``"stderr"`` or ``"channel<k>"`` (``spawn(raw_channels=n)``)."""
    data: bytes

class Message:
    """A whole frame the task sent on a framed channel (``spawn(channels=n)``)."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    task: int
    channel: int
    """The channel's index, 0 to n - 1: answer with ``Task.send(channel, reply)``."""
    frame: bytes
    """The payload, without the 4-byte length."""

ChannelCloseReason = Literal["closed", "truncated", "frame_too_large", "error"]

class ChannelClosed:
    """A framed channel is closed for good, in both directions; the task goes on."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    task: int
    channel: int
    reason: ChannelCloseReason
    """``"closed"`` (by the child between two frames, or the task ended), ``"truncated"``
    (in the middle of a frame), ``"frame_too_large"`` (the child announced a frame over
    ``max_frame``; pidring closed the channel), ``"error"`` (reading failed: ``errno``)."""
    unsent: int
    """Bytes queued by ``Task.send`` (headers included) that were never written."""
    partial: Optional[int]
    """``"truncated"``: bytes of the incomplete frame, header included, that were dropped."""
    frame_length: Optional[int]
    """``"frame_too_large"``: the length the child announced."""
    max_frame: Optional[int]
    """``"frame_too_large"``: the channel's maximum."""
    errno: Optional[int]
    """``"error"``: the errno reading failed with."""

class StdinClosed:
    """The task's stdin (``spawn(stdin=True)``) is closed: by ``close_stdin``, because the task
    stopped reading it, or because the task ended. Comes once, before ``Done``."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    task: int
    error: Optional[WriteError]
    """``None``, or what closed it (``TaskBrokenPipeError`` when the task closed its stdin or
    exited), which ``Task.write`` raises from then on."""
    unwritten: int
    """Bytes queued by ``Task.write`` that were never written."""

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

Event = Union[Output, Message, ChannelClosed, StdinClosed, Exited, Done]

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
    def write(self, data: _BytesLike) -> None:
        """Queues ``data`` for the task's stdin (``spawn(stdin=True)``); returns at once.

        Raises ``StdinNotCapturedError`` (a ``ValueError``) without ``stdin=True``,
        ``StreamClosedError`` (a ``BrokenPipeError``) after ``close_stdin`` or once the task
        ended, ``TaskBrokenPipeError`` once the task stopped reading (no ``SIGPIPE`` ever
        reaches this process), ``PoolClosedError``."""
    def close_stdin(self) -> None:
        """Closes the task's stdin once everything queued was written (the task reads EOF).
        Idempotent. Raises ``StdinNotCapturedError`` without ``stdin=True``."""
    def send(self, channel: int, frame: _BytesLike) -> None:
        """Queues one frame on framed channel ``channel`` (``spawn(channels=n)``: 0 to n - 1):
        the child reads a 4-byte big-endian length, then the frame.

        Raises ``NoSuchChannelError`` and ``FrameTooLargeError`` (both ``ValueError``),
        ``StreamClosedError`` (a ``BrokenPipeError``) once the channel is closed,
        ``TaskBrokenPipeError``, ``PoolClosedError``."""

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
        task_budget: Optional[int] = None,
    ) -> None:
        """``subreaper=True``: orphaned descendants come back to this process and the pool
        reaps them, and every other child of this process that exits too (``subprocess``'s
        included): use it only where pidring starts all of them. ``task_budget``: bytes of a
        task's output and messages read and not yet taken from ``events()``, at most, before
        the pool pauses that task (default 256 KiB)."""
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
        raw_channels: int = 0,
        max_frame: Optional[int] = None,
        budget: Optional[int] = None,
    ) -> Task:
        """Starts ``argv`` and returns its task once the program runs; raises a
        ``SpawnError`` subclass otherwise.

        ``channels``: framed request channels at the fds listed in the child's
        ``PIDRING_CHANNEL_FDS`` (frames: 4-byte big-endian length + payload; ``Message``
        events, ``Task.send``). ``stdin=True``: a pipe for ``Task.write``. ``raw_channels``:
        unframed socketpairs at fds 3, 4, ... read as ``Output(stream="channel<k>")``.
        ``max_frame``: longest frame (default 16 MiB). ``budget``: this task's budget
        (default the pool's ``task_budget``)."""
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
