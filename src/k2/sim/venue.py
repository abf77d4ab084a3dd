"""What every simulated exchange shares: the aiohttp server, generation loop, WebSocket plumbing,
REST admission (fault injection, rate limits), fault controls and the ``/_sim`` control routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import msgspec
from aiohttp import WSMsgType, web

from k2.capture.synth import _fmt, _strip
from k2.model.instrument import Instrument, InstrumentTable
from k2.sim.config import SimConfig
from k2.sim.conn import Conn
from k2.sim.fmt import now_us
from k2.sim.limits import TokenBucket
from k2.sim.market import Generated, Market, SimTrade

log = logging.getLogger("k2.sim")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Counters every exchange reports in ``stats()`` (more appear as they happen).
STAT_KEYS = (
    "connections_accepted", "connections_refused", "connections_open", "connections_dropped",
    "frames_sent", "trade_frames_sent", "frames_repeated", "frames_suppressed", "malformed_sent", "pings_sent",
    "trades_generated", "trades_skipped_ws", "trades_unfillable", "rest_requests", "rest_errors",
    "rest_rate_limited", "shutdowns_announced", "stalls",
)
#: How long a close handshake may take before the connection is aborted.
CLOSE_TIMEOUT_S = 2.0
_MALFORMED_KINDS = 4


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer encoded by msgspec (``msgspec.Raw`` values are written verbatim)."""
    return web.Response(body=msgspec.json.encode(obj), status=status, headers=headers, content_type="application/json")


class FaultError(ValueError):
    """A ``/_sim/fault`` request that cannot be applied."""


class Venue(ABC):
    """One simulated exchange: its market, its server, its connections and its faults.

    Subclasses supply the wire protocol: routes, how generated trades become frames, the REST error and
    rate-limit answers, and what their malformed frames look like."""

    name: ClassVar[str] = ""

    def __init__(self, config: SimConfig, table: InstrumentTable) -> None:
        self.config = config
        insts = [(k, inst) for k, inst in enumerate(table) if inst.exchange == self.name]
        self.market = Market(self.name, insts, config.seed, config.history_per_symbol)
        self.stats: Counter[str] = Counter({k: 0 for k in STAT_KEYS})
        self.conns: set[Conn] = set()
        self.paused = False
        self.port = 0
        self._repeat = 0
        self._refuse = 0
        self._rest_errors: deque[int] = deque()
        self._rate_limit = 0
        self._bucket = TokenBucket(config.rest_rate_per_s, 2 * config.rest_rate_per_s)
        self._malformed_kind = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._handlers: set[asyncio.Task] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._stopping = False
        self._stopped: asyncio.Future | None = None
        self.started_ns = time.monotonic_ns()

    # ------------------------------------------------------------------ lifecycle

    @abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Register the exchange's WebSocket and REST routes."""

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` (0 = ephemeral), serve, and start generating trades."""
        app = web.Application()
        self.add_routes(app)
        app.router.add_get("/_sim/state", self._state_route)
        app.router.add_get("/_sim/emitted", self._emitted_route)
        app.router.add_post("/_sim/fault", self._fault_route)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        self._tasks.append(asyncio.get_running_loop().create_task(self._generate_loop()))

    async def stop(self) -> None:
        """Close every connection (1001), then the server. Idempotent; concurrent calls wait for the first."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._stop()
        finally:
            self._stopped.set_result(None)

    async def _stop(self) -> None:
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.close(1001, "server stopping", now=True)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=CLOSE_TIMEOUT_S + 0.5)
        for conn in list(self.conns):
            conn.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ generation

    async def _generate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.config.tick_s)
            now = loop.time()
            elapsed, last = min(now - last, 1.0), now
            if self.paused:
                continue
            try:
                self.tick(elapsed)
            except Exception:  # a protocol bug must not end generation; it is logged loudly
                log.exception("%s: trade generation failed", self.name)

    def tick(self, elapsed_s: float) -> list[Generated]:
        """Generate the trades of ``elapsed_s`` seconds and hand them to the connections."""
        n = self.market.trade_count(self.config.rate, elapsed_s)
        if n == 0:
            return []
        gen = self.market.generate(n)
        self.stats["trades_generated"] += n
        hidden = [g for g in gen if not g.ws]
        if hidden:
            self.stats["trades_skipped_ws"] += len(hidden)
            self.stats["trades_unfillable"] = sum(l - f + 1 for _, f, l in self.market.unfillable())
        self.dispatch([g for g in gen if g.ws])
        return gen

    @abstractmethod
    def dispatch(self, trades: list[Generated]) -> None:
        """Send freshly generated WS-visible trades to the subscribed connections."""

    # ------------------------------------------------------------------ WebSocket plumbing

    def new_ws(self) -> web.WebSocketResponse:
        return web.WebSocketResponse(autoping=False, timeout=CLOSE_TIMEOUT_S, max_msg_size=1 << 20)

    def ws_handler(self, make: Callable[[web.Request, web.WebSocketResponse], Conn]) -> Handler:
        """An aiohttp handler upgrading to a connection built by ``make`` (which may raise an HTTP error)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._serve_ws(request, make)

        return handler

    async def _serve_ws(self, request: web.Request, make: Callable[[web.Request, web.WebSocketResponse], Conn]) -> web.StreamResponse:
        if self._refuse > 0 or self._stopping:
            if not self._stopping:
                self._refuse -= 1
            self.stats["connections_refused"] += 1
            return web.Response(status=503, text="503 Service Unavailable")
        ws = self.new_ws()
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="Expected a WebSocket upgrade request")
        conn = make(request, ws)
        await ws.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.conns.add(conn)
        self.stats["connections_accepted"] += 1
        self.stats["connections_open"] = len(self.conns)
        try:
            conn.start_writer()
            conn.on_open()
            await self._read(conn, ws)
        finally:
            self.conns.discard(conn)
            self.stats["connections_open"] = len(self.conns)
            try:
                await conn.finish(CLOSE_TIMEOUT_S + 0.5)
            finally:
                if task is not None:
                    self._handlers.discard(task)
        return ws

    async def _read(self, conn: Conn, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError):
            async for msg in ws:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSED):
                    break
                if not conn.on_incoming():
                    continue
                try:
                    if msg.type == WSMsgType.TEXT:
                        conn.on_text(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        conn.on_binary(bytes(msg.data))
                    elif msg.type == WSMsgType.PING:
                        conn.on_ping(bytes(msg.data))
                    elif msg.type == WSMsgType.PONG:
                        conn.on_pong(bytes(msg.data))
                except Exception:  # a protocol bug must not kill the connection silently
                    log.exception("%s: handling a client frame failed", self.name)

    def live_conns(self, kind: type[Conn] = Conn) -> list[Conn]:
        """Open connections of a kind that are not closing."""
        return [c for c in self.conns if isinstance(c, kind) and not c.closing]

    def take_repeat(self) -> bool:
        """Consume one ``repeat_frames`` credit."""
        if self._repeat > 0:
            self._repeat -= 1
            return True
        return False

    # ------------------------------------------------------------------ REST plumbing

    def rest(self, handler: Handler) -> Handler:
        """Wrap a REST handler with fault injection, the token bucket and the exchange's own admission."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            self.stats["rest_requests"] += 1
            resp = self._gate(request)
            if resp is None:
                resp = await handler(request)
            self.after_rest(request, resp)
            return resp

        return wrapped

    def _gate(self, request: web.Request) -> web.StreamResponse | None:
        if self._rest_errors:
            self.stats["rest_errors"] += 1
            return self.rest_error(self._rest_errors.popleft())
        if self._rate_limit > 0:
            self._rate_limit -= 1
            self.stats["rest_rate_limited"] += 1
            return self.rate_limited(1)
        if not self._bucket.take(time.monotonic()):
            self.stats["rest_rate_limited"] += 1
            return self.rate_limited(1)
        return self.admit(request)

    def admit(self, request: web.Request) -> web.StreamResponse | None:
        """Exchange-specific admission (Binance request weight); None lets the request through."""
        return None

    def after_rest(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Decorate every REST answer (Binance adds its used-weight header)."""

    @abstractmethod
    def rest_error(self, status: int) -> web.Response:
        """The answer of the ``rest_errors`` fault."""

    @abstractmethod
    def rate_limited(self, retry_after_s: int) -> web.Response:
        """The exchange's rate-limit answer."""

    # ------------------------------------------------------------------ faults

    def drop_connections(self) -> None:
        """Abort every open WebSocket (no close frame)."""
        for conn in list(self.conns):
            conn.abort()
            self.stats["connections_dropped"] += 1

    def stall(self, seconds: float) -> None:
        """Open connections send nothing for ``seconds``; their trades meanwhile reach REST only."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        until = time.monotonic() + seconds
        for conn in self.conns:
            conn.stalled_until = max(conn.stalled_until, until)
        self.stats["stalls"] += 1

    def skip_ids(self, symbol: str, count: int, rest: bool = True) -> None:
        """The next ``count`` trades of ``symbol`` are not sent on WS (and with ``rest=False`` never served)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        book = self.market.book(symbol)
        if count:
            book.skips.append([count, bool(rest)])

    def repeat_frames(self, count: int) -> None:
        """The next ``count`` trade frames (per connection send) are each sent twice."""
        self._repeat += _count(count)

    def refuse_connections(self, count: int) -> None:
        """The next ``count`` WebSocket connection attempts get HTTP 503."""
        self._refuse += _count(count)

    def rest_errors(self, count: int, status: int = 500) -> None:
        """The next ``count`` REST requests answer ``status`` with an error body."""
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        self._rest_errors.extend([status] * _count(count))

    def rest_rate_limit(self, count: int) -> None:
        """The next ``count`` REST requests get the exchange's rate-limit answer."""
        self._rate_limit += _count(count)

    def send_malformed(self, count: int) -> None:
        """Send ``count`` malformed frames now on every open connection, rotating through the kinds."""
        start = self._malformed_kind
        for conn in list(self.conns):
            for i in range(_count(count)):
                if conn.send(self.malformed_frame(conn, (start + i) % _MALFORMED_KINDS)):
                    self.stats["malformed_sent"] += 1
        self._malformed_kind = (start + count) % _MALFORMED_KINDS

    def announce_shutdown(self, grace_s: float = 0.5) -> None:
        """Send the exchange's shutdown notice (if it has one), then close every connection with 1001."""
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        loop = asyncio.get_running_loop()
        for conn in list(self.conns):
            self.shutdown_notice(conn)
            self._timers.append(loop.call_later(grace_s, conn.close, 1001, "server shutdown"))
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() >= loop.time()]
        self.stats["shutdowns_announced"] += 1

    def shutdown_notice(self, conn: Conn) -> None:
        """Queue the exchange's shutdown notice on ``conn`` (nothing by default)."""

    @abstractmethod
    def malformed_frame(self, conn: Conn, kind: int) -> str | bytes:
        """Malformed frame ``kind``: 0 truncated JSON, 1 price as an object, 2 negative qty, 3 invalid UTF-8 bytes."""

    def sample_trade(self, native: str | None = None) -> tuple[SimTrade, Instrument]:
        """A trade to disguise a malformed frame as: the latest of ``native`` (or of the first instrument)."""
        book = self.market.by_native.get(native or "") or next(iter(self.market.books.values()))
        latest = book.latest(1)
        if latest:
            return latest[0], book.inst
        price = _strip(_fmt(book.units, book.pdec))
        return SimTrade(self.name, book.inst.symbol, book.inst.native_symbol, book.first_id, price, "1", "buy", now_us()), book.inst

    # ------------------------------------------------------------------ ground truth and control routes

    def state(self) -> dict[str, Any]:
        return {
            "exchange": self.name,
            "last_ids": self.market.last_ids(),
            "emitted": self.market.emitted_total,
            "unfillable": [list(r) for r in self.market.unfillable()],
            "stats": self.stats_dict(),
        }

    def stats_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats)
        out["connections_open"] = len(self.conns)
        out["paused"] = self.paused
        out["port"] = self.port
        return out

    async def _state_route(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _emitted_route(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol")
        if symbol is None:
            return json_response(self.market.emitted())
        if symbol not in self.market.books:
            return json_response({"error": f"unknown symbol {symbol!r}"}, status=404)
        return json_response(self.market.book(symbol).kept())

    async def _fault_route(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise FaultError("body must be a JSON object")
            kind = body.pop("kind", None)
            exchange = body.pop("exchange", self.name)
            if exchange != self.name:
                raise FaultError(f"this is the {self.name} server, not {exchange!r}")
            self.apply_fault(kind, body)
        except (ValueError, KeyError, TypeError) as exc:  # json errors are ValueErrors too
            return json_response({"ok": False, "error": str(exc)}, status=400)
        return json_response({"ok": True, "kind": kind})

    def apply_fault(self, kind: Any, args: dict[str, Any]) -> None:
        """Apply a fault by its ``/_sim/fault`` name with keyword arguments."""
        spec = _FAULTS.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise FaultError(f"unknown fault kind {kind!r} (expected one of {', '.join(_FAULTS)})")
        method, params = spec
        unknown = set(args) - set(params)
        if unknown:
            raise FaultError(f"{kind}: unexpected arguments {sorted(unknown)}")
        for name, value in args.items():
            if not isinstance(value, params[name]) or (isinstance(value, bool) and params[name] is not bool):
                raise FaultError(f"{kind}: {name} has the wrong type ({value!r})")
        getattr(self, method)(**args)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


def _count(count: int) -> int:
    if count < 0:
        raise ValueError("count must be >= 0")
    return count


_NUM = (int, float)
#: /_sim/fault kind -> (method, {argument: accepted types})
_FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "drop": ("drop_connections", {}),
    "stall": ("stall", {"seconds": _NUM}),
    "skip_ids": ("skip_ids", {"symbol": str, "count": int, "rest": bool}),
    "repeat": ("repeat_frames", {"count": int}),
    "malformed": ("send_malformed", {"count": int}),
    "shutdown": ("announce_shutdown", {"grace_s": _NUM}),
    "refuse": ("refuse_connections", {"count": int}),
    "rest_errors": ("rest_errors", {"count": int, "status": int}),
    "rate_limit": ("rest_rate_limit", {"count": int}),
    "pause": ("pause", {}),
    "resume": ("resume", {}),
}
