"""Talking to tasks: stdin (Task.write, close_stdin), framed request channels (Task.send,
Message, ChannelClosed), the typed errors of writing, and per-task flow control, on real
processes. The framed children are stdlib-only Python, as the README's snippet."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
import time

import pytest

import pidring
from conftest import collect

# The README's child side of a framed channel, stdlib only. Each test appends its scenario.
CHILD = r"""
import os, socket, struct, sys

def channels():
    fds = os.environ.get("PIDRING_CHANNEL_FDS", "")
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",") if fd]

def send(sock, payload):
    sock.sendall(struct.pack(">I", len(payload)) + payload)

def recv(sock):
    def exactly(n):
        buf = bytearray()
        while len(buf) < n:
            part = sock.recv(n - len(buf))
            if not part:
                raise EOFError("channel closed")
            buf += part
        return bytes(buf)
    (length,) = struct.unpack(">I", exactly(4))
    return exactly(length)
"""

# Sends `rounds` requests on channel 0 (the last one 1 MiB, over any pipe buffer), checks
# each reply is b"re:" + the request, prints "ok <rounds>".
REQUESTER = CHILD + r"""
rounds = int(sys.argv[1])
chan = channels()[0]
for i in range(rounds):
    request = (b"big:%d" % i) * (1 << 18) if i == rounds - 1 else b"request %d" % i
    send(chan, request)
    reply = recv(chan)
    assert reply == b"re:" + request, (i, len(reply))
print("ok", rounds)
"""


def serve(pool, tasks, timeout=60.0, events=None):
    """Answers every Message of ``tasks`` with b"re:" + frame until each task is Done;
    returns {id: [events]}."""
    by_id = {t.id: t for t in tasks}
    got = {t.id: [] for t in tasks}
    pending = set(by_id)
    for event in events if events is not None else pool.events(timeout=timeout):
        if event.task not in by_id:
            continue
        got[event.task].append(event)
        if isinstance(event, pidring.Message):
            by_id[event.task].send(event.channel, b"re:" + event.frame)
        elif isinstance(event, pidring.Done):
            pending.discard(event.task)
            if not pending:
                break
    assert not pending, f"no Done within {timeout} s of quiet for tasks {sorted(pending)}"
    return got


def stdout_of(events):
    return b"".join(e.data for e in events if isinstance(e, pidring.Output) and e.stream == "stdout")


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


@pytest.fixture(scope="module")
def pool():
    with pidring.Pool(workers=2) as p:
        yield p


# --- stdin --------------------------------------------------------------------------------


def test_stdin_round_trip_through_cat(pool, tag):
    task = pool.spawn(["cat"], stdin=True, extra_env=tag.env)
    sent = [b"hello through stdin\n", bytearray(b"a bytearray\n"), memoryview(b"a memoryview\n")]
    big = bytes(range(256)) * 4096  # 1 MiB: more than a pipe holds, written in pieces
    for data in sent:
        task.write(data)
    task.write(big)
    task.write(b"")  # nothing to write: accepted, changes nothing
    task.close_stdin()
    events = collect(pool, [task])[task.id]
    assert stdout_of(events) == b"".join(bytes(d) for d in sent) + big
    (closed,) = of_type(events, pidring.StdinClosed)
    assert (closed.error, closed.unwritten) == (None, 0)
    assert repr(closed) == f"StdinClosed(task={task.id}, error=None, unwritten=0)"
    assert events.index(closed) < len(events) - 1  # before Done
    assert events[-1].outcome.ok


def test_close_stdin_gives_eof(pool, tag):
    # The child prints only once it has read end of file.
    task = pool.spawn(["sh", "-c", "wc -c; echo saw-eof"], stdin=True, extra_env=tag.env)
    task.write(b"12345")
    task.close_stdin()
    task.close_stdin()  # again: nothing to do
    with pytest.raises(pidring.StreamClosedError) as info:
        task.write(b"after close")
    assert isinstance(info.value, BrokenPipeError) and info.value.errno == errno.EPIPE
    events = collect(pool, [task])[task.id]
    assert stdout_of(events).split() == [b"5", b"saw-eof"]
    assert events[-1].outcome.ok


def test_write_after_the_child_closed_stdin_raises_broken_pipe(pool, tag):
    # SIGPIPE at its default disposition (death) while the pool writes to a closed pipe:
    # if the signal reached this process, pytest would die with it.
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        task = pool.spawn(["sh", "-c", "exec 0<&-; echo stdin-closed; exec sleep 1000"],
                          stdin=True, extra_env=tag.env)
        for event in pool.events(timeout=30):  # the child closed its stdin
            if isinstance(event, pidring.Output) and b"stdin-closed" in event.data:
                break
        # Queued at once; the pool's write finds the pipe broken and says so.
        task.write(b"nobody reads this\n")
        closed = None
        for event in pool.events(timeout=30):
            if isinstance(event, pidring.StdinClosed) and event.task == task.id:
                closed = event
                break
        assert closed is not None, "no StdinClosed after a write to a closed pipe"
        assert isinstance(closed.error, pidring.TaskBrokenPipeError)
        assert closed.unwritten == len(b"nobody reads this\n")
        assert "TaskBrokenPipeError" in repr(closed)
        with pytest.raises(pidring.TaskBrokenPipeError) as info:
            task.write(b"again")
        e = info.value
        assert isinstance(e, BrokenPipeError) and isinstance(e, pidring.StreamClosedError)
        assert isinstance(e, pidring.WriteError) and e.errno == errno.EPIPE
        task.terminate()
        events = collect(pool, [task])[task.id]
        assert events[-1].outcome.reason == "terminated"
    finally:
        signal.signal(signal.SIGPIPE, previous)


def test_writing_without_a_stdin_pipe(pool, tag):
    task = pool.spawn(["sleep", "1000"], extra_env=tag.env)
    with pytest.raises(pidring.StdinNotCapturedError) as info:
        task.write(b"x")
    assert isinstance(info.value, ValueError) and isinstance(info.value, pidring.WriteError)
    with pytest.raises(pidring.StdinNotCapturedError):
        task.close_stdin()
    with pytest.raises(pidring.NoSuchChannelError):
        task.send(0, b"no channels")
    catting = pool.spawn(["cat"], stdin=True, extra_env=tag.env)
    with pytest.raises(TypeError):
        catting.write("a str, not bytes")
    with pytest.raises(TypeError):
        catting.send(0, 42)
    task.kill()
    catting.kill()
    collect(pool, [task, catting])


# --- framed channels ----------------------------------------------------------------------


def test_request_reply_over_a_framed_channel(pool, tag):
    task = pool.spawn([sys.executable, "-c", REQUESTER, "50"], channels=1, extra_env=tag.env)
    events = serve(pool, [task])[task.id]
    assert stdout_of(events) == b"ok 50\n", events[-1]
    messages = of_type(events, pidring.Message)
    assert [m.frame for m in messages[:3]] == [b"request 0", b"request 1", b"request 2"]
    assert len(messages) == 50 and len(messages[-1].frame) == len(b"big:49") * (1 << 18)
    assert all(m.channel == 0 for m in messages)
    assert repr(messages[0]) == f"Message(task={task.id}, channel=0, frame=b'request 0')"
    assert repr(messages[-1]).startswith(f"Message(task={task.id}, channel=0, frame=<{len(messages[-1].frame)} bytes: b'big:49big:49")
    assert pidring.Message.__match_args__ == ("task", "channel", "frame")
    (closed,) = of_type(events, pidring.ChannelClosed)  # the child exited: the channel closed
    assert (closed.channel, closed.reason, closed.unsent) == (0, "closed", 0)
    assert events[-1].outcome.ok


def test_channels_are_found_in_the_environment(pool, tag):
    # channels=n: the fds listed in PIDRING_CHANNEL_FDS; raw channels (the binding's
    # `channels` before framed ones existed) come first at 3, 4, ...
    code = CHILD + r"""
print(os.environ["PIDRING_CHANNEL_FDS"])
for k, chan in enumerate(channels()):
    send(chan, b"from channel %d" % k)
os.write(3, b"raw bytes")
"""
    task = pool.spawn([sys.executable, "-c", code], channels=3, raw_channels=1, extra_env=tag.env)
    events = collect(pool, [task])[task.id]
    assert stdout_of(events) == b"4,5,6\n"
    assert sorted((m.channel, m.frame) for m in of_type(events, pidring.Message)) == [
        (k, b"from channel %d" % k) for k in range(3)
    ]
    raw = [e.data for e in of_type(events, pidring.Output) if e.stream == "channel0"]
    assert raw == [b"raw bytes"]
    assert sorted(c.channel for c in of_type(events, pidring.ChannelClosed)) == [0, 1, 2]


def test_frames_over_the_maximum(pool, tag):
    # From Python: refused at once. From the child: the channel is closed, the task goes on.
    code = CHILD + r"""
chan = channels()[0]
assert recv(chan) == b"x" * 1024  # exactly the maximum is fine
chan.sendall(struct.pack(">I", 1025) + b"y" * 1025)
try:
    recv(chan)
    print("not closed")
except (EOFError, ConnectionResetError):
    print("closed on me")
"""
    task = pool.spawn([sys.executable, "-c", code], channels=1, max_frame=1024, extra_env=tag.env)
    with pytest.raises(pidring.FrameTooLargeError) as info:
        task.send(0, b"x" * 1025)
    e = info.value
    assert isinstance(e, ValueError) and isinstance(e, pidring.WriteError)
    assert (e.length, e.max_frame) == (1025, 1024)
    for bad in (1, -1, 256, 1 << 70):
        with pytest.raises((pidring.NoSuchChannelError, OverflowError)):
            task.send(bad, b"no such channel")
    with pytest.raises(pidring.NoSuchChannelError):
        task.send(-1, b"")
    task.send(0, b"x" * 1024)
    events = collect(pool, [task])[task.id]
    (closed,) = of_type(events, pidring.ChannelClosed)
    assert (closed.reason, closed.frame_length, closed.max_frame) == ("frame_too_large", 1025, 1024)
    assert repr(closed).startswith(f"ChannelClosed(task={task.id}, channel=0, reason='frame_too_large', frame_length=1025")
    assert not of_type(events, pidring.Message)
    assert stdout_of(events) == b"closed on me\n"
    assert events[-1].outcome.ok


def test_channel_closed_early_and_mid_frame(pool, tag):
    early = CHILD + r"""
channels()[0].close()
print("closed", flush=True)
sys.stdin.read()  # keeps running (until the test closes stdin)
"""
    mid_frame = CHILD + r"""
chan = channels()[0]
chan.sendall(struct.pack(">I", 100) + b"only ten b")
os._exit(3)
"""
    a = pool.spawn([sys.executable, "-c", early], channels=1, stdin=True, extra_env=tag.env)
    b = pool.spawn([sys.executable, "-c", mid_frame], channels=1, extra_env=tag.env)
    events = {a.id: [], b.id: []}
    for event in pool.events(timeout=30):
        events[event.task].append(event)
        if isinstance(event, pidring.ChannelClosed) and event.task == a.id:
            break
    assert events[a.id][-1].reason == "closed", events[a.id]
    with pytest.raises(pidring.StreamClosedError) as info:
        a.send(0, b"too late")
    assert isinstance(info.value, BrokenPipeError)
    a.close_stdin()
    if not any(isinstance(e, pidring.Done) for e in events[b.id]):
        for task, more in collect(pool, [a, b]).items():
            events[task] += more
    else:
        events[a.id] += collect(pool, [a])[a.id]
    assert events[a.id][-1].outcome.ok
    (truncated,) = of_type(events[b.id], pidring.ChannelClosed)
    assert (truncated.reason, truncated.partial) == ("truncated", 14)
    kinds = [type(e).__name__ for e in events[b.id]]
    assert kinds[-2:] == ["Exited", "Done"] and kinds.index("ChannelClosed") < kinds.index("Exited")
    assert events[b.id][-1].outcome.exit_code == 3


def test_asyncio_iteration_sees_messages(tag):
    async def main():
        with pidring.Pool(workers=1) as pool:
            tasks = [pool.spawn([sys.executable, "-c", REQUESTER, "10"], channels=1, extra_env=tag.env)
                     for _ in range(3)]
            by_id = {t.id: t for t in tasks}
            got = {t.id: [] for t in tasks}
            pending = set(by_id)
            async for event in pool.events(timeout=60):
                got[event.task].append(event)
                if isinstance(event, pidring.Message):
                    by_id[event.task].send(event.channel, b"re:" + event.frame)
                    await asyncio.sleep(0)  # other coroutines run between requests
                elif isinstance(event, pidring.Done):
                    pending.discard(event.task)
                    if not pending:
                        break
            return tasks, got

    tasks, got = asyncio.run(main())
    for task in tasks:
        assert len(of_type(got[task.id], pidring.Message)) == 10
        assert stdout_of(got[task.id]) == b"ok 10\n"


def test_a_hundred_tasks_request_and_reply_at_once(tag):
    rounds = 20
    with pidring.Pool(workers=2) as pool:
        tasks = [pool.spawn([sys.executable, "-c", REQUESTER, str(rounds)], channels=1, extra_env=tag.env)
                 for _ in range(100)]
        events = serve(pool, tasks, timeout=120)
    for task in tasks:
        assert stdout_of(events[task.id]) == b"ok %d\n" % rounds, events[task.id][-1]
        assert len(of_type(events[task.id], pidring.Message)) == rounds
        assert events[task.id][-1].outcome.ok


# --- flow control -------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, 1 << 20], ids=["default-budget", "1MiB-budget"])
def test_a_consumer_that_does_not_read_pauses_the_task_not_the_memory(tag, budget):
    # Per-task flow control: output read from a task and not yet taken by Python holds the
    # task's budget; once it is full the pool stops reading the task, whose writes block.
    # A task writing 256 MiB while nobody reads grows the supervisor by about its budget.
    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    total = 256 << 20
    code = f"import os\nb = b'y' * (1 << 20)\nfor _ in range({total >> 20}): os.write(1, b)"
    with pidring.Pool(workers=1, task_budget=budget) as pool:
        budget = budget or 256 << 10  # the default
        before = rss()
        task = pool.spawn([sys.executable, "-c", code], extra_env=tag.env)
        time.sleep(2)  # not reading
        grown = rss() - before
        got = 0
        for event in pool.events(timeout=30):
            if isinstance(event, pidring.Output):
                got += len(event.data)
            if isinstance(event, pidring.Done):
                assert event.task == task.id and event.outcome.ok
                assert event.outcome.stdout_bytes == total
                break
    assert got == total
    print(f"supervisor RSS grew {grown / (1 << 20):.1f} MiB while a task wrote to a consumer that did not read "
          f"(task budget {budget >> 10} KiB, backend {pool.backend})")
    # The budget, the worker's read buffers (allocated before `before` with io_uring; up to
    # 4 MiB with epoll) and allocator slack: far below the 256 MiB written.
    assert grown < budget + (16 << 20), f"RSS grew {grown >> 20} MiB while the consumer did not read"
