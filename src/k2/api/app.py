"""The FastAPI application: routes over the query service, the stream hub, metrics and the dashboard.

``create_app(ctx)`` builds it from an :class:`ApiContext` the entry point assembled (no globals): ``k2 up`` passes
the running platform, ``k2 serve`` only a store. Store calls run in a bounded pool of worker threads
(``api.query_threads``); JSON answers are formatted by ClickHouse and passed through as bytes; candle and trade
answers are cached until a write touches their pair (:mod:`k2.api.cache`). The contract is docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import orjson
import pyarrow as pa
from fastapi import Body, FastAPI, Path as PathParam, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2.api.cache import AnswerCache, Generations
from k2.api.security import Guard
from k2.api.stream import StreamHub
from k2.errors import BadRequest, QueryFailed, QueryRefused, RetryableStoreError, StoreError
from k2.model.instrument import EXCHANGES
from k2.query.service import QueryService, now_us, parse_timeframe, time_param

log = logging.getLogger("k2.api")
STATIC = Path(__file__).parent / "static"
FORMATS = ("json", "csv", "arrow", "parquet")
MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}


@dataclass
class ApiContext:
    """What the API serves from; built by the entry point."""

    settings: Any  # k2.settings.Settings
    store: Any
    service: QueryService
    mode: Literal["up", "serve"] = "serve"
    platform: Any = None  # k2.pipeline.live.Platform once `k2 up` has started it
    metrics: Any = None  # k2.observability.metrics.Metrics
    generations: Generations = field(default_factory=Generations)
    hub: StreamHub | None = None
    cold_stats: Any = None  # callable -> dict (cached by the caller)

    def on_stored(self, trades: pa.Table) -> None:
        """The hot writer's callback (writer thread): invalidate answers, feed the stream."""
        first = trades.group_by(["exchange", "symbol"]).aggregate([("ts", "min")])
        ts = first.column("ts_min").cast(pa.int64()).to_pylist()
        self.generations.bump(
            {(e, s): t for e, s, t in zip(first.column("exchange").to_pylist(), first.column("symbol").to_pylist(), ts)}
        )
        if self.hub is not None:
            self.hub.on_stored(trades)


class SqlRequest(BaseModel):
    sql: str = Field(..., description="one SELECT statement", examples=["SELECT exchange, count() FROM trades GROUP BY exchange"])
    format: Literal["json", "csv", "arrow", "parquet"] = "json"
    max_rows: int | None = Field(None, ge=1, description="rows returned at most (capped by api.sql_max_rows)")


def _doc(example: dict, bulk: bool = False) -> dict:
    """OpenAPI description of an answer: its JSON example, the bulk formats, and the error shape."""
    content: dict[str, Any] = {"application/json": {"example": example}}
    if bulk:
        content.update({MEDIA["csv"]: {}, MEDIA["arrow"]: {}, MEDIA["parquet"]: {}})
    error = {"application/json": {"example": {"error": "what to change", "status": 400}}}
    return {200: {"content": content}, 400: {"description": "bad request", "content": error},
            401: {"description": "API key missing or unknown"}, 429: {"description": "rate limited (Retry-After)"}}


_CANDLE = {"bucket": 1784073600000000, "open": "117234.57", "high": "117234.9", "low": "117234.05",
           "close": "117234.23", "volume": "43.92906632", "quote_volume": "5149998.4672408576",
           "vwap": "117234.416723675487396518", "trade_count": 1783}
_TRADE = {"exchange": "kraken", "symbol": "BTC-USD", "trade_id": 15000018, "price": "117234.53", "qty": "0.01724825",
          "side": "sell", "ts": 1784073600001704, "ts_recv": 1784073600038104}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(ctx: ApiContext) -> Any:
    api = ctx.settings.api
    limiter = anyio.CapacityLimiter(api.query_threads)
    cache = AnswerCache(ctx.generations, api.cache_entries, serve_previous=api.serve_previous_while_refreshing)
    service = ctx.service

    async def run(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    if ctx.hub is None:
        ctx.hub = StreamHub(service, lambda fn: run(fn), queue_size=api.stream_queue, metrics=ctx.metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        hub_task = asyncio.create_task(ctx.hub.run(), name="k2-stream-hub")
        try:
            yield
        finally:
            hub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hub_task

    app = FastAPI(
        title="K2 market data API",
        version="1",
        description=(
            "Exact crypto trades and OHLCV candles from Binance, Kraken and Coinbase, hot and cold tiers alike. "
            "Prices and quantities are decimal strings; times are integer microseconds since the Unix epoch "
            "(UTC); ranges are start <= t < end. See docs/api.md."
        ),
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.cache = cache

    # -- errors: one shape, {"error": "...", "status": n} ---------------------------------------------
    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest):
        return _error(exc.status, str(exc))

    @app.exception_handler(QueryRefused)
    async def _refused(request: Request, exc: QueryRefused):
        if ctx.metrics is not None:
            ctx.metrics.sql_refused()
        return _error(400, f"refused: {exc}")

    @app.exception_handler(QueryFailed)
    async def _failed(request: Request, exc: QueryFailed):
        text = str(exc)
        if "TIMEOUT_EXCEEDED" in text:
            return _error(408, f"the query ran out of time ({api.sql_timeout_s:g} s): {text[:300]}")
        return _error(400, f"the query failed: {text[:500]}")

    @app.exception_handler(RetryableStoreError)
    async def _busy(request: Request, exc: RetryableStoreError):
        return _error(503, "the store is busy; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError):
        log.error("store error on %s: %s", request.url.path, exc)
        return _error(500, "the store failed; see the server log")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg')}")
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no route {request.url.path}; see /docs for the API"
        return _error(exc.status_code, msg)

    # -- liveness, readiness, status ------------------------------------------------------------------
    @app.get("/health", tags=["ops"], summary="liveness (never needs a key)")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], summary="readiness: the store answers (and under k2 up, ingestion runs)")
    async def ready():
        reasons = []
        try:
            await asyncio.wait_for(run(ctx.store.query_arrow, "SELECT 1 AS one"), 5)
        except Exception as exc:
            reasons.append(f"store: {type(exc).__name__}")
        if ctx.mode == "up":
            p = ctx.platform
            if p is None:
                reasons.append("platform starting")
            elif p.writer.error is not None or not p.writer.alive:
                reasons.append("hot writer stopped")
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons, "status": 503}, status_code=503)
        return {"ready": True, "mode": ctx.mode}

    status_cache: dict[str, Any] = {}

    @app.get("/v1/status", tags=["ops"], summary="feeds, gaps, writer, and both tiers")
    async def status():
        now = time.monotonic()
        hit = status_cache.get("v")
        if hit is not None and now - hit[0] < 1.0:
            return Response(hit[1], media_type=MEDIA["json"])
        out = await run(_status, ctx)
        out["api"] = {"cache": {"hits": cache.hits, "misses": cache.misses, "refreshes": cache.refreshes,
                                "shared": cache.shared, "previous": cache.previous,
                                "entries": len(cache._entries)},
                      "stream_clients": len(ctx.hub.clients) if ctx.hub is not None else 0}
        body = orjson.dumps(out)
        status_cache["v"] = (now, body)
        return Response(body, media_type=MEDIA["json"])

    # -- catalogue --------------------------------------------------------------------------------------
    @app.get("/v1/exchanges", tags=["reference"])
    async def exchanges():
        states = {}
        if ctx.platform is not None:
            states = {ex: st.state for ex, st in ctx.platform.status().items()}
        out = [
            {"exchange": ex, "symbols": sum(1 for i in service.instruments if i.exchange == ex), "state": states.get(ex)}
            for ex in EXCHANGES
        ]
        return {"exchanges": out}

    @app.get("/v1/symbols", tags=["reference"])
    async def symbols(exchange: Annotated[str | None, Query(description="binance, kraken or coinbase")] = None):
        ex = service.exchange(exchange, required=False)
        return {"symbols": service.symbols(ex)}

    # -- candles ----------------------------------------------------------------------------------------
    @app.get("/v1/ohlcv/{timeframe}", tags=["market data"],
             summary="OHLCV candles: the stored 1m 5m 15m 30m 1h 1d, or any whole multiple of a minute rolled up exactly",
             responses=_doc({"exchange": "binance", "symbol": "BTC-USDT", "timeframe": "1m", "start": 1784073600000000,
                             "end": 1784160000000000, "candles": [_CANDLE]}, bulk=True))
    async def ohlcv(
        timeframe: Annotated[str, PathParam(description="1m 5m 15m 30m 1h 1d, or e.g. 2m 4h 3d 1w")],
        exchange: Annotated[str, Query(description="binance, kraken or coinbase")] = None,  # type: ignore[assignment]
        symbol: Annotated[str, Query(description="canonical BASE-QUOTE, e.g. BTC-USDT")] = None,  # type: ignore[assignment]
        start: Annotated[str | None, Query(description="first bucket time, µs or ISO 8601 (default: 1000 buckets before end)")] = None,
        end: Annotated[str | None, Query(description="end of the range, exclusive (default: now)")] = None,
        format: Annotated[Literal["json", "csv", "arrow", "parquet"], Query()] = "json",
    ):
        tf = parse_timeframe(timeframe)
        ex = service.exchange(exchange, required=True)
        sym = service.symbol(ex, symbol)
        s, e = time_param(start, "start"), time_param(end, "end")
        if format == "json":
            lo, hi, n = service.candle_range(tf, s, e)
            key = ("ohlcv", tf.name, ex, sym, lo, hi)
            answer = await cache.get(key, [(ex, sym)], lambda: run(service.ohlcv_answer, tf, ex, sym, s, e),
                                     refresh=lambda old, since: run(service.ohlcv_refresh, old, since))
            return Response(answer.body, media_type=MEDIA["json"])
        service.candle_range(tf, s, e)  # validates before the download starts
        chunks = lambda: service.ohlcv_chunks(tf, ex, sym, s, e)  # noqa: E731
        return _bulk(format, chunks, f"{ex}_{sym}_{tf.name}", limiter)

    # -- trades -----------------------------------------------------------------------------------------
    @app.get("/v1/trades", tags=["market data"],
             summary="trades in (ts, exchange, trade_id) order (order=desc: newest first), cursor-paginated",
             responses=_doc({"trades": [_TRADE], "next_cursor": "WzE3ODQwNzM2MDAwMDE3MDQsImtyYWtlbiIsMTUwMDAwMThd"},
                            bulk=True))
    async def trades(
        symbol: Annotated[str, Query(description="canonical BASE-QUOTE, e.g. BTC-USD")] = None,  # type: ignore[assignment]
        exchange: Annotated[str | None, Query(description="one exchange (default: every exchange listing the symbol)")] = None,
        start: Annotated[str | None, Query(description="exchange trade time, µs or ISO 8601, inclusive (default: 1 h before end)")] = None,
        end: Annotated[str | None, Query(description="exclusive (default: now)")] = None,
        limit: Annotated[int | None, Query(ge=1, description="rows per page (JSON: default 1000); bulk formats: all rows by default")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first")] = "asc",
        format: Annotated[Literal["json", "csv", "arrow", "parquet"], Query()] = "json",
    ):
        desc = order == "desc"
        ex = service.exchange(exchange, required=False)
        sym = service.symbol(ex, symbol)
        s, e = time_param(start, "start"), time_param(end, "end")
        pairs = service.pairs(ex, sym)
        if format == "json":
            n = 1000 if limit is None else limit
            if e is not None or s is not None:
                key = ("trades", ex, sym, s, e, n, cursor, desc)
                page = await cache.get(key, pairs, lambda: run(service.trades_page, ex, sym, s, e, n, cursor, desc))
            else:  # "the last hour up to now" moves with the clock: never cached
                page = await run(service.trades_page, ex, sym, s, e, n, cursor, desc)
            return Response(orjson.dumps(page.body), media_type=MEDIA["json"])
        if cursor:
            raise BadRequest("cursor is for JSON pages; bulk formats stream the whole range")
        service.trade_range(s, e)
        chunks = lambda: service.trades_chunks(ex, sym, s, e, limit, desc=desc)  # noqa: E731
        return _bulk(format, chunks, f"{ex or 'all'}_{sym}_trades", limiter)

    # -- SQL --------------------------------------------------------------------------------------------
    @app.post("/v1/sql", tags=["sql"], summary="read-only SQL with a row limit and a timeout",
              responses=_doc({"columns": [{"name": "exchange", "type": "LowCardinality(String)"},
                                          {"name": "n", "type": "UInt64"}],
                              "rows": [["binance", "7029"]], "rows_returned": 1, "truncated": False}, bulk=True))
    async def sql(req: Annotated[SqlRequest, Body()]):
        from k2.query.readonly import ReadOnlySQL

        cap = min(req.max_rows or api.sql_max_rows, api.sql_max_rows)
        if req.format == "json":
            ro = ReadOnlySQL(ctx.store, timeout_s=api.sql_timeout_s, max_rows=cap + 1, output_settings=[
                "output_format_json_quote_decimals = 1", "output_format_json_quote_64bit_integers = 1",
                "output_format_json_quote_64bit_floats = 0"])
            text = await run(ro.text, req.sql, "JSONCompact")
            out = orjson.loads(text)
            rows = out.get("data", [])
            truncated = len(rows) > cap
            rows = rows[:cap]
            body = {"columns": out.get("meta", []), "rows": rows, "rows_returned": len(rows), "truncated": truncated}
            return Response(orjson.dumps(body), media_type=MEDIA["json"])
        ro = ReadOnlySQL(ctx.store, timeout_s=api.sql_timeout_s, max_rows=cap)
        if req.format == "csv":
            text = await run(ro.text, req.sql, "CSVWithNames")
            lines = text.splitlines(keepends=True)
            return Response("".join(lines[: cap + 1]), media_type=MEDIA["csv"])
        table = await run(ro.arrow, req.sql)
        table = table.slice(0, cap)
        return _bulk(req.format, lambda: iter([table]), "k2_sql", limiter)

    # -- stream -----------------------------------------------------------------------------------------
    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        hub = ctx.hub
        client = hub.new_client(ws.send_text)
        sender = asyncio.create_task(_sender(ws, client))
        try:
            qp = ws.query_params
            if qp.get("symbols"):
                msg = {"op": "subscribe", "symbols": qp["symbols"]}
                if qp.get("channels"):
                    msg["channels"] = qp["channels"]
                if qp.get("timeframes"):
                    msg["timeframes"] = qp["timeframes"]
                try:
                    client.offer(orjson.dumps(hub.apply(client, msg)))
                except BadRequest as exc:
                    client.offer(orjson.dumps({"type": "error", "error": str(exc)}))
            while True:
                text = await ws.receive_text()
                try:
                    msg = orjson.loads(text)
                    if not isinstance(msg, dict):
                        raise BadRequest("send a JSON object such as {\"op\": \"subscribe\", \"symbols\": [\"binance:BTC-USDT\"]}")
                    answer = hub.apply(client, msg)
                except orjson.JSONDecodeError:
                    answer = {"type": "error", "error": "not JSON; send {\"op\": \"subscribe\", \"symbols\": [...]}"}
                except BadRequest as exc:
                    answer = {"type": "error", "error": str(exc)}
                client.offer(orjson.dumps(answer))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.remove(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    # -- metrics and dashboard --------------------------------------------------------------------------
    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def metrics():
        if ctx.metrics is None:
            return _error(404, "metrics are not enabled in this process")
        body, ctype = await run(ctx.metrics.render)
        return Response(body, media_type=ctype)

    @app.get("/", include_in_schema=False)
    async def root(request: Request):
        if (STATIC / "index.html").exists():
            return FileResponse(STATIC / "index.html")
        return RedirectResponse("/docs")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard():
        return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    wrapped: Any = Guard(
        app,
        keys=tuple(k.get_secret_value() for k in api.api_keys),
        rate=api.rate_limit_per_s,
        burst=api.rate_limit_burst,
        metrics=ctx.metrics,
    )
    if api.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(
            wrapped, allow_origins=list(api.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    wrapped.fastapi = app  # tests and the server reach the FastAPI object through here
    return wrapped


async def _sender(ws: WebSocket, client) -> None:
    """One client's writer: drains its queue; ends the connection when the hub dropped it as too slow."""
    try:
        while True:
            if client.dropped and client.queue.empty():
                await ws.close(code=1013, reason="too slow: fell behind the stream")
                return
            msg = await client.queue.get()
            await ws.send_text(msg.decode())
            client.sent += 1
    except Exception:
        return


# -- bulk downloads ------------------------------------------------------------------------------------
class _Sink(io.RawIOBase):
    """A write-only file that hands out what was written since the last ``take``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _csv_lines(table: pa.Table, header: bool) -> bytes:
    import pyarrow.csv as pacsv

    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_decimal(col.type):
            from k2.api.stream import decimal_strings

            col = decimal_strings(col)
        elif pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols[name] = col
    sink = io.BytesIO()
    pacsv.write_csv(pa.table(cols), sink, pacsv.WriteOptions(include_header=header, quoting_style="needed"))
    return sink.getvalue()


def _encode(fmt: str, chunks: Iterator[pa.Table]) -> Iterator[bytes]:
    sink = _Sink()
    writer = None
    first = True
    for table in chunks:
        if fmt == "csv":
            yield _csv_lines(table, header=first)
        elif fmt == "arrow":
            if writer is None:
                writer = pa.ipc.new_stream(sink, table.schema)
            writer.write_table(table)
            yield sink.take()
        else:
            import pyarrow.parquet as pq

            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
            if table.num_rows:
                writer.write_table(table)
            yield sink.take()
        first = False
    if writer is not None:
        writer.close()
        yield sink.take()


def _bulk(fmt: str, chunks, name: str, limiter) -> StreamingResponse:
    """Stream ``chunks()`` (Arrow tables) as CSV, Arrow IPC or Parquet, one chunk in memory at a time."""

    async def body():
        it = _encode(fmt, chunks())
        done = object()
        while True:
            part = await anyio.to_thread.run_sync(next, it, done, limiter=limiter)
            if part is done:
                return
            if part:
                yield part

    ext = {"csv": "csv", "arrow": "arrow", "parquet": "parquet"}[fmt]
    return StreamingResponse(body(), media_type=MEDIA[fmt],
                             headers={"Content-Disposition": f'attachment; filename="{name.lower()}.{ext}"'})


# -- status -----------------------------------------------------------------------------------------------
def _status(ctx: ApiContext) -> dict:
    store = ctx.store
    out: dict[str, Any] = {"mode": ctx.mode, "now": now_us(), "feeds": [], "writer": None}
    p = ctx.platform
    if p is not None:
        for ex, st in p.status().items():
            tr = p.trackers.get(ex)
            pending = sum(1 for _ in tr.open_gaps()) if tr is not None else 0
            out["feeds"].append({
                "exchange": ex, "state": st.state, "lag_ms": round(st.lag_us / 1000, 3),
                "last_trade": st.last_trade_us or None, "last_frame": st.last_frame_us or None,
                "trades": st.trades, "frames": st.frames, "dead_letters": st.dead_letters,
                "reconnects": sum(st.disconnects.values()), "last_error": st.last_error or None,
                "gaps": {"detected": tr.detected if tr else 0, "filled": tr.filled if tr else 0,
                         "unfilled": tr.unfilled if tr else 0, "pending": pending},
            })
        w = p.writer.stats
        out["writer"] = {"trades_stored": w.trades_stored, "duplicates": w.duplicates, "dead_letters": w.dead_letters,
                         "inserts": w.inserts, "alive": p.writer.alive}
    # count(), not system.parts: hot retention deletes rows with lightweight DELETEs, which parts keep counting
    # until they merge
    span = store.query_arrow(
        "SELECT toUnixTimestamp64Micro(min(ts)) AS lo, toUnixTimestamp64Micro(max(ts)) AS hi, count() AS n, "
        "(SELECT count() FROM raw_frames) AS raw, (SELECT count() FROM dead_letters_store) AS dead FROM trades_store"
    ).to_pylist()[0]
    rows = {"trades_store": int(span["n"]), "raw_frames": int(span["raw"]), "dead_letters_store": int(span["dead"])}
    gaps = store.query_arrow("SELECT status, count() AS n FROM gaps GROUP BY status").to_pylist()
    cold = ctx.cold_stats() if ctx.cold_stats is not None else {}
    if p is not None:
        cold.update({"offloads": p.offloads, "offload_errors": p.offload_errors})
        last = p.last_offload
        if last is not None:
            cold["last_offload"] = {"trades": last.trades, "raw_frames": last.raw_frames,
                                    "trade_watermark": last.trade_watermark, "seconds": round(last.seconds, 3)}
    out["tiers"] = {
        "hot": {"trades": rows.get("trades_store", 0), "raw_frames": rows.get("raw_frames", 0),
                "dead_letters": rows.get("dead_letters_store", 0),
                "oldest_trade": span["lo"] if span["n"] else None, "newest_trade": span["hi"] if span["n"] else None},
        "cold": cold,
    }
    out["gaps"] = {s: 0 for s in ("pending", "filled", "partial", "unfilled")} | {g["status"]: int(g["n"]) for g in gaps}
    return out
