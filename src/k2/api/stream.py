"""``WS /v1/stream``: stored trades and candle updates, fanned out to subscribers.

The hot writer calls :meth:`StreamHub.on_stored` (from its thread) with the trades each insert stored (new
ones only: deduplicated, never twice). The hub's loop turns a batch into one JSON message per distinct
subscription (a hundred clients watching BTC-USDT cost one encoding), and queues it on every client's bounded
queue; each client has its own sender task. A client whose queue is full is too slow and is dropped (close
code 1013) instead of slowing everyone else down or growing memory.

Candle updates are read back from the store (so they are the stored candles, exactly), by a separate task that
coalesces: while one read runs, newer batches only widen the set of dirty (pair, first bucket) it reads next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from k2.errors import BadRequest
from k2.hot.chdb_store import sql_str
from k2.hot.ddl import TIMEFRAME_SECONDS
from k2.query.service import JSON_SETTINGS

log = logging.getLogger("k2.api.stream")
Pair = tuple[str, str]
CHANNELS = ("trades", "candles")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(eq=False)
class StreamClient:
    send_text: Callable[[str], Awaitable[None]]
    queue: asyncio.Queue
    pairs: set[Pair] = field(default_factory=set)
    channels: set[str] = field(default_factory=lambda: {"trades", "candles"})
    timeframes: set[str] = field(default_factory=lambda: {"1m"})
    dropped: bool = False
    sent: int = 0

    def offer(self, message: bytes) -> bool:
        """Queue a message; False when the client is too far behind (it is then dropped)."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            return False


def decimal_strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Exact decimal -> the shortest exact string, as ClickHouse prints it ("67012.34", "100", "0")."""
    text = pc.cast(col, pa.string())
    sci = pc.match_substring(text, "E")
    if pc.any(sci).as_py():  # Arrow writes |x| < 1e-6 (and a zero of scale > 6) in scientific notation
        from k2.model.trade import canonical_decimal

        fixed = [canonical_decimal(v) if v is not None else None for v in pc.filter(col, sci).to_pylist()]
        text = pc.replace_with_mask(text, sci, pa.array(fixed, pa.string()))
    return pc.replace_substring_regex(text, r"\.0*$|(\.[0-9]*?)0+$", r"\1")


def trade_rows(table: pa.Table) -> list[dict]:
    cols = {
        "exchange": table.column("exchange"),
        "symbol": table.column("symbol"),
        "trade_id": table.column("trade_id"),
        "price": decimal_strings(table.column("price")),
        "qty": decimal_strings(table.column("qty")),
        "side": table.column("side"),
        "ts": table.column("ts").cast(pa.int64()),
        "ts_recv": table.column("ts_recv").cast(pa.int64()),
    }
    return pa.table(cols).to_pylist()


class StreamHub:
    def __init__(self, service, run_query: Callable[[Callable[[], object]], Awaitable[object]], *,
                 queue_size: int = 1000, metrics=None) -> None:
        self.service = service
        self.run_query = run_query  # runs a blocking store call in the API's query threads
        self.queue_size = queue_size
        self.metrics = metrics
        self.clients: set[StreamClient] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incoming: asyncio.Queue | None = None
        self._dirty: dict[Pair, int] = {}  # pair -> earliest trade time (µs) not yet sent as a candle update
        self._dirty_event: asyncio.Event | None = None
        self.batches = 0
        self.messages = 0
        self.dropped = 0

    # -- the writer's side -------------------------------------------------------------------------
    def on_stored(self, trades: pa.Table) -> None:
        """Called from the writer thread after an insert; never blocks it."""
        loop, incoming = self._loop, self._incoming
        if loop is None or incoming is None or not self.clients:
            return
        try:
            loop.call_soon_threadsafe(incoming.put_nowait, (now_us(), trades))
        except RuntimeError:  # the loop is closed: the API has stopped
            pass

    # -- the loop's side ----------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._incoming = asyncio.Queue()
        self._dirty_event = asyncio.Event()
        candles = asyncio.create_task(self._candle_loop(), name="k2-stream-candles")
        try:
            while True:
                stored_at, table = await self._incoming.get()
                try:
                    self._fan_out(stored_at, table)
                except Exception:  # one bad batch never stops the stream
                    log.exception("stream fan-out failed")
        finally:
            candles.cancel()
            self._loop = None

    def _wanted(self) -> set[Pair]:
        out: set[Pair] = set()
        for c in self.clients:
            out |= c.pairs
        return out

    def _fan_out(self, stored_at: int, table: pa.Table) -> None:
        self.batches += 1
        wanted = self._wanted()
        if not wanted or table.num_rows == 0:
            return
        key = pc.binary_join_element_wise(table.column("exchange"), table.column("symbol"), "\x1f")
        mask = pc.is_in(key, pa.array([f"{e}\x1f{s}" for e, s in wanted]))
        table = table.filter(mask)
        if table.num_rows == 0:
            return
        by_pair: dict[Pair, list[dict]] = {}
        for row in trade_rows(table):
            by_pair.setdefault((row["exchange"], row["symbol"]), []).append(row)
        for pair, rows in by_pair.items():
            first = min(r["ts"] for r in rows)
            if first < self._dirty.get(pair, first + 1):
                self._dirty[pair] = first
        def message(data: list[dict], sent_at: int) -> bytes:
            data.sort(key=lambda r: (r["ts"], r["exchange"], r["trade_id"]))
            return orjson.dumps({"type": "trades", "stored": stored_at, "sent": sent_at, "data": data})

        self._deliver(by_pair, lambda c: "trades" in c.channels, message)
        if any("candles" in c.channels for c in self.clients):
            self._dirty_event.set()
        else:
            self._dirty.clear()

    def _offer(self, client: StreamClient, msg: bytes) -> None:
        if client.offer(msg):
            self.messages += 1
            if self.metrics is not None:
                self.metrics.stream_messages(1)
        elif client in self.clients:
            self.clients.discard(client)
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.stream_dropped_clients(1)
                self.metrics.stream_clients_set(len(self.clients))

    async def _candle_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, {}
            wanted: dict[str, set[Pair]] = {}
            for c in self.clients:
                if "candles" in c.channels:
                    for tf in c.timeframes:
                        wanted.setdefault(tf, set()).update(p for p in c.pairs if p in dirty)
            for tf, pairs in wanted.items():
                if not pairs:
                    continue
                try:
                    rows = await self.run_query(lambda tf=tf, pairs=pairs: self._read_candles(tf, pairs, dirty))
                except Exception:
                    log.exception("stream candle read failed")
                    continue
                self._send_candles(tf, rows)

    def _read_candles(self, tf: str, pairs: set[Pair], dirty: dict[Pair, int]) -> list[dict]:
        sec = TIMEFRAME_SECONDS[tf]
        conds = " OR ".join(
            f"(v.exchange = {sql_str(e)} AND v.symbol = {sql_str(s)} AND "
            f"v.bucket >= toDateTime({dirty[(e, s)] // 1_000_000 // sec * sec}, 'UTC'))"
            for e, s in sorted(pairs)
        )
        sql = (
            "SELECT toString(v.exchange) AS exchange, toString(v.symbol) AS symbol, "
            "toInt64(toUnixTimestamp(v.bucket)) * 1000000 AS bucket, open, high, low, close, volume, "
            f"quote_volume, vwap, trade_count FROM ohlcv_{tf} AS v WHERE {conds} "
            f"ORDER BY exchange, symbol, bucket SETTINGS {JSON_SETTINGS}"
        )
        text = self.service.store.query_text(sql, "JSONEachRow").strip()
        return orjson.loads(text) if text else []

    def _send_candles(self, tf: str, rows: list[dict]) -> None:
        by_pair: dict[Pair, list[dict]] = {}
        for r in rows:
            by_pair.setdefault((r["exchange"], r["symbol"]), []).append(r)
        self._deliver(
            by_pair,
            lambda c: "candles" in c.channels and tf in c.timeframes,
            lambda data, sent_at: orjson.dumps({"type": "candles", "timeframe": tf, "sent": sent_at, "data": data}),
        )

    def _deliver(self, by_pair: dict[Pair, list[dict]], wants, message) -> None:
        """Offer every client that ``wants`` it the rows of its pairs: one encoding per distinct set of pairs."""
        encoded: dict[frozenset, bytes] = {}
        sent_at = now_us()
        for client in list(self.clients):
            if not wants(client):
                continue
            mine = frozenset(p for p in client.pairs if p in by_pair)
            if not mine:
                continue
            msg = encoded.get(mine)
            if msg is None:
                msg = encoded[mine] = message([r for p in sorted(mine) for r in by_pair[p]], sent_at)
            self._offer(client, msg)

    # -- subscriptions ------------------------------------------------------------------------------
    def new_client(self, send_text: Callable[[str], Awaitable[None]]) -> StreamClient:
        client = StreamClient(send_text, asyncio.Queue(maxsize=self.queue_size))
        self.clients.add(client)
        if self.metrics is not None:
            self.metrics.stream_clients_set(len(self.clients))
        return client

    def remove(self, client: StreamClient) -> None:
        self.clients.discard(client)
        if self.metrics is not None:
            self.metrics.stream_clients_set(len(self.clients))

    def resolve_symbols(self, entries: list[str]) -> set[Pair]:
        pairs: set[Pair] = set()
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                raise BadRequest("symbols entries are 'exchange:SYMBOL' or 'SYMBOL' strings")
            if ":" in entry:
                ex, sym = entry.split(":", 1)
                ex = self.service.exchange(ex, required=True)
                pairs.add((ex, self.service.symbol(ex, sym)))
            else:
                sym = self.service.symbol(None, entry)
                pairs.update(self.service.pairs(None, sym))
        return pairs

    def apply(self, client: StreamClient, msg: dict) -> dict:
        """Apply a subscribe/unsubscribe message; returns the answer to send."""
        op = msg.get("op")
        if op not in ("subscribe", "unsubscribe"):
            raise BadRequest("op must be 'subscribe' or 'unsubscribe'")
        symbols = msg.get("symbols", [])
        if isinstance(symbols, str):
            symbols = [s for s in symbols.split(",") if s.strip()]
        if not isinstance(symbols, list):
            raise BadRequest("symbols must be a list of 'exchange:SYMBOL' strings")
        pairs = self.resolve_symbols(symbols)
        channels = msg.get("channels")
        timeframes = msg.get("timeframes")
        if channels is not None:
            if isinstance(channels, str):
                channels = channels.split(",")
            bad = [c for c in channels if c not in CHANNELS]
            if bad or not channels:
                raise BadRequest(f"unknown channel(s) {bad}: use trades and/or candles")
        if timeframes is not None:
            if isinstance(timeframes, str):
                timeframes = timeframes.split(",")
            bad = [t for t in timeframes if t not in TIMEFRAME_SECONDS]
            if bad or not timeframes:
                raise BadRequest(
                    f"timeframe(s) {bad} are not streamed: candle updates cover the stored timeframes "
                    f"{', '.join(TIMEFRAME_SECONDS)}; fetch others from GET /v1/ohlcv/{{timeframe}}"
                )
        if op == "subscribe":
            client.pairs |= pairs
            if channels is not None:
                client.channels = set(channels)
            if timeframes is not None:
                client.timeframes = set(timeframes)
        else:
            client.pairs -= pairs if symbols else set(client.pairs)
        return {
            "type": "subscribed",
            "symbols": sorted(f"{e}:{s}" for e, s in client.pairs),
            "channels": sorted(client.channels),
            "timeframes": sorted(client.timeframes, key=lambda t: TIMEFRAME_SECONDS[t]),
        }
