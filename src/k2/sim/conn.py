"""One simulated WebSocket connection: an ordered outbound queue drained by a writer task.

Everything a connection sends goes through :meth:`Conn.send` synchronously, so frames keep the order in
which the simulator decided them (a snapshot computed at subscribe time can never be overtaken by a trade
generated later). Faults act here: a stalled connection sends nothing, a dropped one is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from k2.sim.venue import Venue

#: Frames queued for one client beyond this: the client is a slow consumer and gets disconnected.
MAX_QUEUED = 200_000
_ids = itertools.count(1)


class Conn:
    """Server side of one WebSocket connection. Protocol subclasses implement ``on_*`` hooks."""

    def __init__(self, venue: Venue, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.id = next(_ids)
        self.venue = venue
        self.request = request
        self.ws = ws
        self.transport = request.transport
        self.opened = time.monotonic()
        self.last_sent = self.opened
        self.stalled_until = 0.0
        self.closing = False
        self.close_code: int | None = None
        self._close_queued = False
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._writer: asyncio.Task | None = None

    # --- protocol hooks ---

    def on_open(self) -> None:
        """Called once the upgrade is done (send greetings, start per-connection timers)."""

    def on_text(self, text: str) -> None:
        """A text frame from the client."""

    def on_binary(self, data: bytes) -> None:
        """A binary frame from the client (ignored unless a protocol cares)."""

    def on_ping(self, payload: bytes) -> None:
        """A WebSocket ping from the client: answered with a pong echoing its payload."""
        self._put(("pong", payload))

    def on_pong(self, payload: bytes) -> None:
        """A WebSocket pong from the client."""

    def on_incoming(self) -> bool:
        """Every client frame (text, binary, ping, pong) passes here first; False drops the frame."""
        return True

    # --- sending ---

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    def _put(self, item: tuple[Any, ...]) -> bool:
        if self.closing or self.stalled:
            self.venue.stats["frames_suppressed"] += 1
            return False
        if self._queue.qsize() >= MAX_QUEUED:
            self.venue.stats["slow_consumer_aborts"] += 1
            self.abort()
            return False
        self._queue.put_nowait(item)
        self.last_sent = time.monotonic()
        return True

    def send(self, data: str | bytes) -> bool:
        """Queue one frame (text for ``str``, binary for ``bytes``). False when suppressed (stall, closing)."""
        return self._put(("text", data) if isinstance(data, str) else ("bytes", data))

    def send_trade(self, data: str) -> bool:
        """Queue a frame carrying trades; the ``repeat_frames`` fault sends it twice."""
        if not self.send(data):
            return False
        self.venue.stats["trade_frames_sent"] += 1
        if self.venue.take_repeat():
            self._queue.put_nowait(("text", data))
            self.venue.stats["frames_repeated"] += 1
        return True

    def ping(self, payload: bytes) -> bool:
        """Queue a WebSocket-level ping."""
        return self._put(("ping", payload))

    def close(self, code: int, reason: str = "", *, now: bool = False) -> None:
        """Close with a close frame after the queued frames (``now``: drop them first). Ignores stalls."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        if now:
            self._drain()
        self._queue.put_nowait(("close", code, reason))
        self._close_queued = True

    def abort(self) -> None:
        """Abort the TCP connection: no close frame (what a crashed server or a cut cable looks like)."""
        self.closing = True
        self._drain()
        if self.transport is not None:
            self.transport.abort()

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    # --- tasks ---

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run a per-connection task; it is cancelled when the connection ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        ws, stats = self.ws, self.venue.stats
        while True:
            item = await self._queue.get()
            kind = item[0]
            try:
                if kind == "text":
                    await ws.send_str(item[1])
                    stats["frames_sent"] += 1
                elif kind == "bytes":
                    await ws.send_bytes(item[1])
                    stats["frames_sent"] += 1
                elif kind == "ping":
                    await ws.ping(item[1])
                    stats["pings_sent"] += 1
                elif kind == "pong":
                    await ws.pong(item[1])
                else:
                    await ws.close(code=item[1], message=item[2].encode())
                    return
            except (ConnectionError, RuntimeError):
                self.abort()
                return

    async def finish(self, timeout: float) -> None:
        """After the reader ended: let a pending close complete, then stop the writer and every task."""
        for task in list(self._tasks):
            task.cancel()
        writer = self._writer
        if writer is not None and not writer.done():
            if not self.closing:
                self.close(1000, now=True)
            if self._close_queued:  # let the close handshake finish (bounded)
                try:
                    await asyncio.wait_for(asyncio.shield(writer), timeout)
                except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                    self.abort()
                except asyncio.CancelledError:
                    writer.cancel()
                    raise
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
