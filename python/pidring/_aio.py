"""The asyncio side of ``Pool.events()``: ``async for`` awaits the next event.

``EventStream.__anext__`` returns ``next_event(stream)``. While the pool's event channel is
empty, the stream's eventfd is registered with the running loop (``loop.add_reader``) and
the coroutine sleeps until pidring's waker makes it readable: no thread polls, and the loop
is free meanwhile.
"""

from __future__ import annotations

import asyncio


def _wake(waiter: asyncio.Future, woke: bool) -> None:
    if not waiter.done():
        waiter.set_result(woke)


async def next_event(stream):
    loop = asyncio.get_running_loop()
    timeout = stream.timeout
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        # An event, None while there is none (the fd is then armed), StopAsyncIteration at the end.
        event = stream._poll()
        if event is not None:
            return event
        timer = None
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StopAsyncIteration
        waiter = loop.create_future()
        fd = stream.fileno()
        loop.add_reader(fd, _wake, waiter, True)
        if deadline is not None:
            timer = loop.call_later(remaining, _wake, waiter, False)
        try:
            woke = await waiter
        finally:
            loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()
        if not woke:
            raise StopAsyncIteration
