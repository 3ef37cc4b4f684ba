"""A TCP proxy between a client and the test Redis that can hold or drop Redis' replies:
what a slow reply, a lost reply, or Redis dying mid-batch look like from the client's side,
made deterministic (the test decides which bytes never arrive, and when)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

ReplyFilter = Callable[[bytes], bool]


class RedisProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._drop: ReplyFilter | None = None
        self._released = asyncio.Event()
        self._released.set()
        #: Set when a reply was dropped (the client's connection closed instead).
        self.dropped = asyncio.Event()
        #: Set when a reply arrived from Redis while replies are held.
        self.holding = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_next_reply(self, which: ReplyFilter = lambda _: True) -> None:
        """The next chunk of replies from Redis that `which` accepts is not forwarded: the
        proxy closes that client connection instead (the commands ran; their replies are
        lost). One-shot."""
        self.dropped.clear()
        self._drop = which

    def hold_replies(self) -> None:
        """Replies from Redis wait in the proxy until `release()`."""
        self.holding.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def requests() -> None:
            while data := await client_r.read(65536):
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def replies() -> None:
            while data := await up_r.read(65536):
                if self._drop is not None and self._drop(data):
                    self._drop = None
                    client_w.transport.abort()
                    up_w.transport.abort()
                    self.dropped.set()
                    return
                if not self._released.is_set():
                    self.holding.set()
                    await self._released.wait()
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(replies())]
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        client_w.transport.abort()
        up_w.transport.abort()

    def _track(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(r, w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RedisProxy]:
        self._server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
