"""Pool.events(): blocking iteration without the GIL, asyncio iteration driven by an fd the
loop watches, timeouts, and the event classes themselves."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import threading

import pytest

import pidring
from conftest import check_order, collect


def test_timeout_ends_iteration_when_nothing_comes():
    with pidring.Pool(workers=1) as pool:
        assert list(pool.events(timeout=0.1)) == []
        assert list(pool.events(timeout=0)) == []
        with pytest.raises(ValueError):
            pool.events(timeout=-1)


def test_iteration_ends_after_close_and_drain(tag):
    pool = pidring.Pool(workers=1)
    task = pool.spawn(["echo", "last words"], extra_env=tag.env)
    collect(pool, [task])
    stream = pool.events()
    pool.close()
    assert list(stream) == []  # no timeout needed: the pool is closed and drained


def test_blocking_iteration_releases_the_gil(tag):
    # A thread blocks in next() with no timeout. If it held the GIL, this thread could not
    # run the Python below at all; the watchdog turns such a hang into a failure.
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        with pidring.Pool(workers=1) as pool:
            got = []
            reader = threading.Thread(target=lambda: got.append(next(iter(pool.events()))))
            reader.start()
            total = sum(i * i for i in range(200_000))  # Python work while the reader waits
            task = pool.spawn(["echo", str(total)], extra_env=tag.env)
            reader.join()
            assert got and got[0].task == task.id
            collect(pool, [task])
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_asyncio_iteration(tag):
    async def main():
        with pidring.Pool(workers=1) as pool:
            script = "for i in 1 2 3; do echo tick-$i; sleep 0.1; done"
            tasks = [pool.spawn(["sh", "-c", script], extra_env=tag.env) for _ in range(3)]
            ticks = 0
            stop = asyncio.Event()

            async def ticker():
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticking = asyncio.ensure_future(ticker())
            threads_before = threading.active_count()
            events = {t.id: [] for t in tasks}
            pending = set(events)
            async for event in pool.events(timeout=30):
                events[event.task].append(event)
                if isinstance(event, pidring.Done):
                    pending.discard(event.task)
                    if not pending:
                        break
            stop.set()
            await ticking
            return tasks, events, ticks, threads_before

    tasks, events, ticks, threads_before = asyncio.run(main())
    for task in tasks:
        check_order(events[task.id])
        out = b"".join(e.data for e in events[task.id] if isinstance(e, pidring.Output))
        assert out == b"tick-1\ntick-2\ntick-3\n"
        assert events[task.id][-1].outcome.ok
    # The loop kept running while the iterator waited (an fd wait, not a blocking call),
    # and no Python thread did the waiting for it.
    assert ticks > 0
    assert threading.active_count() == threads_before


def test_asyncio_timeout_and_end():
    async def main():
        pool = pidring.Pool(workers=1)
        quiet = [e async for e in pool.events(timeout=0.1)]
        stream = pool.events()
        pool.close()
        after_close = [e async for e in stream]  # ends by itself once closed and drained
        return quiet, after_close

    assert asyncio.run(main()) == ([], [])


def test_asyncio_consumers_share_events(tag):
    # Two concurrent `async for` loops on one pool: each event reaches exactly one of them.
    async def main():
        with pidring.Pool(workers=1) as pool:
            n = 20
            tasks = [pool.spawn(["echo", str(i)], extra_env=tag.env) for i in range(n)]

            async def consume():
                return [e async for e in pool.events(timeout=1.0)]

            a, b = await asyncio.gather(consume(), consume())
            return tasks, a, b

    tasks, a, b = asyncio.run(main())
    done = [e.task for e in a + b if isinstance(e, pidring.Done)]
    assert sorted(done) == sorted(t.id for t in tasks)


def test_asyncio_cancelled_wait_leaves_the_loop_clean():
    async def main():
        with pidring.Pool(workers=1) as pool:
            stream = pool.events()
            waiter = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            # The fd is no longer watched: a new wait can register it again.
            task = pool.spawn(["true"])
            event = await stream.__anext__()
            assert event.task == task.id

    asyncio.run(main())


def test_event_classes(tag):
    with pidring.Pool(workers=1) as pool:
        # One write(2), so one Output (output comes in chunks as read, not in lines).
        task = pool.spawn([sys.executable, "-c", "import os; os.write(1, b'x' * 100 + b'\\n')"],
                          extra_env=tag.env)
        out, exited, done = collect(pool, [task])[task.id]
    assert isinstance(out.data, bytes) and out.data == b"x" * 100 + b"\n"
    assert repr(exited) == f"Exited(task={task.id}, status=0)"
    assert repr(out).startswith(f"Output(task={task.id}, stream='stdout', data=<101 bytes: b'xxx")
    assert repr(done).startswith(f"Done(task={task.id}, outcome=Outcome(reason='exited', returncode=0")
    assert repr(task) == f"<pidring.Task id={task.id} pid={task.pid}>"
    for event, attr in ((out, "data"), (exited, "status"), (done, "outcome"), (done.outcome, "reason")):
        with pytest.raises(AttributeError):
            setattr(event, attr, None)
    assert pidring.Output.__match_args__ == ("task", "stream", "data")
    assert pidring.Done.__match_args__ == ("task", "outcome")


def test_pool_properties():
    with pidring.Pool(workers=2) as pool:
        assert pool.backend in ("uring", "epoll") and pool.backend_reason
        assert pool.containment in ("cgroup", "process-group") and pool.containment_reason
        assert pool.workers == 2 and pool.capacity > 1000
        assert pool.stats()["live_tasks"] == 0
        assert repr(pool).startswith(f"<pidring.Pool backend={pool.backend}")
        assert not pool.closed
    assert pool.closed and repr(pool).endswith("closed>")
