"""Every route of the API against a real store, values checked against the store and a Decimal recomputation."""

from __future__ import annotations

import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from k2.query.service import WEEK_OFFSET_S
from tests.api.conftest import START_US, all_trades, trade_table
from tests.candles import recompute

DAY_US = 86_400 * 1_000_000
END_US = START_US + 13 * DAY_US


@pytest.fixture(scope="module")
def trades(env):
    return all_trades(env[1])


def _candles_from_api(body: dict) -> dict:
    out = {}
    for c in body["candles"]:
        out[(body["exchange"], body["symbol"], c["bucket"] // 1_000_000)] = (
            Decimal(c["open"]), Decimal(c["high"]), Decimal(c["low"]), Decimal(c["close"]), Decimal(c["volume"]),
            Decimal(c["quote_volume"]), Decimal(c["vwap"]), c["trade_count"],
        )
    return out


def _expected(trades, ex, sym, width_s, offset_s, lo_us, hi_us):
    mine = [t for t in trades if t.exchange == ex and t.symbol == sym]
    got = recompute(mine, width_s, offset_s)
    return {k: v for k, v in got.items() if lo_us <= k[2] * 1_000_000 < hi_us}


@pytest.mark.parametrize(
    "tf,width,offset",
    [("1m", 60, 0), ("5m", 300, 0), ("15m", 900, 0), ("30m", 1800, 0), ("1h", 3600, 0), ("1d", 86400, 0),
     ("2m", 120, 0), ("90m", 5400, 0), ("4h", 14400, 0), ("3d", 259200, 0), ("1w", 604800, WEEK_OFFSET_S),
     ("60m", 3600, 0)],
)
def test_ohlcv_equals_a_decimal_recomputation(env, trades, tf, width, offset):
    client, _, _ = env
    for ex, sym in [("binance", "BTC-USDT"), ("kraken", "ETH-USD"), ("coinbase", "DOGE-USD")]:
        r = client.get(f"/v1/ohlcv/{tf}", params={"exchange": ex, "symbol": sym, "start": START_US, "end": END_US})
        assert r.status_code == 200, r.text
        body = r.json()
        lo, hi = body["start"], body["end"]
        assert lo >= START_US and (lo // 1_000_000 - offset) % width == 0
        want = _expected(trades, ex, sym, width, offset, lo, hi)
        assert want, "the fixture must put trades in range"
        assert _candles_from_api(body) == want
        buckets = [c["bucket"] for c in body["candles"]]
        assert buckets == sorted(buckets)


def test_ohlcv_partial_range_keeps_whole_buckets(env, trades):
    client, _, _ = env
    start = START_US + 3 * DAY_US + 17 * 60 * 1_000_000 + 5  # not on a bucket boundary
    end = start + 2 * DAY_US
    r = client.get("/v1/ohlcv/4h", params={"exchange": "binance", "symbol": "SOL-USDT", "start": start, "end": end})
    body = r.json()
    first = body["candles"][0]["bucket"]
    assert first >= start and first % (4 * 3600 * 1_000_000) == 0
    assert all(start <= c["bucket"] < end for c in body["candles"])
    want = _expected(trades, "binance", "SOL-USDT", 14400, 0, start, end)
    assert _candles_from_api(body) == want


def test_ohlcv_iso_times_and_case(env):
    client, _, _ = env
    a = client.get("/v1/ohlcv/1h", params={"exchange": "Binance", "symbol": "btc-usdt",
                                          "start": "2026-07-16T00:00:00Z", "end": "2026-07-17"}).json()
    b = client.get("/v1/ohlcv/1h", params={"exchange": "binance", "symbol": "BTC-USDT",
                                          "start": START_US + DAY_US, "end": START_US + 2 * DAY_US}).json()
    assert a == b and len(a["candles"]) > 0


@pytest.mark.parametrize("fmt", ["csv", "arrow", "parquet"])
def test_ohlcv_bulk_formats_are_exact(env, fmt):
    client, _, _ = env
    params = {"exchange": "kraken", "symbol": "BTC-USD", "start": START_US, "end": END_US}
    js = client.get("/v1/ohlcv/1h", params=params).json()["candles"]
    r = client.get("/v1/ohlcv/1h", params={**params, "format": fmt})
    assert r.status_code == 200
    if fmt == "csv":
        lines = r.text.strip().splitlines()
        assert lines[0] == '"bucket","open","high","low","close","volume","quote_volume","vwap","trade_count"'
        rows = [ln.split(",") for ln in lines[1:]]
        assert [int(x[0]) for x in rows] == [c["bucket"] for c in js]
        assert [Decimal(x[6].strip('"')) for x in rows] == [Decimal(c["quote_volume"]) for c in js]
        return
    table = pa.ipc.open_stream(r.content).read_all() if fmt == "arrow" else pq.read_table(io.BytesIO(r.content))
    assert pa.types.is_decimal(table.schema.field("price" if "price" in table.column_names else "open").type)
    assert table.num_rows == len(js)
    assert [v for v in table.column("quote_volume").to_pylist()] == [Decimal(c["quote_volume"]) for c in js]
    assert table.column("bucket").cast(pa.int64()).to_pylist() == [c["bucket"] for c in js]


def test_ohlcv_bulk_streams_many_chunks(env, trades, monkeypatch):
    """A bulk download larger than one chunk arrives whole and in order."""
    client, _, ctx = env
    orig = ctx.service.ohlcv_chunks
    monkeypatch.setattr(ctx.service, "ohlcv_chunks", lambda *a, **k: orig(*a, chunk_buckets=500))
    r = client.get("/v1/ohlcv/1m", params={"exchange": "binance", "symbol": "BTC-USDT", "start": START_US,
                                          "end": END_US, "format": "arrow"})
    table = pa.ipc.open_stream(r.content).read_all()
    want = _expected(trades, "binance", "BTC-USDT", 60, 0, START_US, END_US)
    assert table.num_rows == len(want)
    assert table.column("bucket").cast(pa.int64()).to_pylist() == sorted(k[2] * 1_000_000 for k in want)


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("/v1/ohlcv/1x?exchange=binance&symbol=BTC-USDT", "unknown timeframe"),
        ("/v1/ohlcv/0m?exchange=binance&symbol=BTC-USDT", "unknown timeframe"),
        ("/v1/ohlcv/53w?exchange=binance&symbol=BTC-USDT", "longer than a year"),
        ("/v1/ohlcv/1m?exchange=binance&symbol=BTC-EUR", "unknown symbol 'BTC-EUR' on binance"),
        ("/v1/ohlcv/1m?exchange=bitfinex&symbol=BTC-USD", "unknown exchange"),
        ("/v1/ohlcv/1m?symbol=BTC-USD", "exchange is required"),
        ("/v1/ohlcv/1m?exchange=kraken", "symbol is required"),
        (f"/v1/ohlcv/1m?exchange=kraken&symbol=BTC-USD&start={END_US}&end={START_US}", "must be before end"),
        ("/v1/ohlcv/1m?exchange=kraken&symbol=BTC-USD&start=2020-01-01&end=2026-01-01", "too large a range"),
        ("/v1/ohlcv/1m?exchange=kraken&symbol=BTC-USD&start=yesterday", "neither an ISO 8601 time"),
        ("/v1/trades?symbol=BTC-USD&limit=0", "limit"),
        ("/v1/trades?symbol=BTC-USD&limit=100001", "limit must be between"),
        ("/v1/trades?symbol=BTC-USD&cursor=bm9wZQ", "invalid cursor"),
        ("/v1/trades?exchange=binance&symbol=BTC-USD", "unknown symbol 'BTC-USD' on binance"),
        ("/v1/trades?symbol=BTC-USD&format=xml", "format"),
        ("/v1/trades?symbol=BTC-USD&format=csv&cursor=abc", "cursor is for JSON pages"),
        ("/v1/symbols?exchange=ftx", "unknown exchange"),
    ],
)
def test_bad_requests_say_what_to_change(env, url, fragment):
    client, _, _ = env
    r = client.get(url)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and fragment in body["error"]


def test_unknown_route_is_404_with_a_message(env):
    r = env[0].get("/v2/candles")
    assert r.status_code == 404 and "no route" in r.json()["error"]


def test_trades_values_match_the_store(env, trades):
    client, _, _ = env
    start, end = START_US + DAY_US, START_US + DAY_US + 6 * 3600 * 1_000_000
    r = client.get("/v1/trades", params={"symbol": "BTC-USD", "start": start, "end": end, "limit": 100_000})
    got = r.json()
    assert got["next_cursor"] is None
    want = sorted(
        (t for t in trades if t.symbol == "BTC-USD" and start <= t.ts < end), key=lambda t: (t.ts, t.exchange, t.trade_id)
    )
    assert len(want) > 10
    assert [(x["exchange"], x["trade_id"], Decimal(x["price"]), Decimal(x["qty"]), x["side"], x["ts"], x["ts_recv"])
            for x in got["trades"]] == [(t.exchange, t.trade_id, t.price, t.qty, t.side, t.ts, t.ts_recv) for t in want]
    assert {x["exchange"] for x in got["trades"]} == {"kraken", "coinbase"}
    one = client.get("/v1/trades", params={"symbol": "BTC-USD", "exchange": "kraken", "start": start, "end": end,
                                          "limit": 100_000}).json()["trades"]
    assert one == [x for x in got["trades"] if x["exchange"] == "kraken"]


def test_pagination_neither_skips_nor_repeats(env, trades):
    client, store, ctx = env
    params = {"symbol": "ETH-USD", "start": START_US, "end": END_US, "limit": 37}
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/v1/trades", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        body = r.json()
        assert len(body["trades"]) <= 37
        seen += [(x["ts"], x["exchange"], x["trade_id"]) for x in body["trades"]]
        cursor = body["next_cursor"]
        pages += 1
        if pages == 3:
            # trades arriving between pages (late ones inside the range, and newer ones) must not shift the pages
            late = [{"exchange": "kraken", "symbol": "ETH-USD", "native_symbol": "ETH/USD", "trade_id": 9_000_000_000 + i,
                     "price": "3000.5", "qty": "0.1", "side": "buy", "ts": END_US + 1000 + i, "ts_recv": END_US + 2000 + i}
                    for i in range(3)]
            res = store.insert_trades(trade_table(late))
            ctx.on_stored(res.stored)
        if cursor is None:
            break
    want = sorted((t.ts, t.exchange, t.trade_id) for t in trades if t.symbol == "ETH-USD" and START_US <= t.ts < END_US)
    assert pages > 10
    assert seen == want  # every row once, in order


def test_symbols_and_exchanges(env):
    client, _, _ = env
    syms = client.get("/v1/symbols").json()["symbols"]
    assert len(syms) == 34
    assert {"exchange": "kraken", "symbol": "DOGE-USD", "native_symbol": "DOGE/USD", "base": "DOGE", "quote": "USD"} in syms
    assert len(client.get("/v1/symbols", params={"exchange": "binance"}).json()["symbols"]) == 12
    ex = client.get("/v1/exchanges").json()["exchanges"]
    assert ex == [{"exchange": "binance", "symbols": 12, "state": None}, {"exchange": "kraken", "symbols": 11, "state": None},
                  {"exchange": "coinbase", "symbols": 11, "state": None}]


def test_status_counts_the_store(env):
    client, store, _ = env
    body = client.get("/v1/status").json()
    n = store.query_arrow("SELECT count() AS n, toUnixTimestamp64Micro(max(ts)) AS hi FROM trades_store").to_pylist()[0]
    assert body["mode"] == "serve" and body["feeds"] == []
    assert body["tiers"]["hot"]["trades"] == n["n"]
    assert body["tiers"]["hot"]["newest_trade"] == n["hi"]
    assert body["tiers"]["cold"]["trades"] == 0
    assert set(body["gaps"]) >= {"pending", "filled", "partial", "unfilled"}


def test_health_ready_and_openapi(env):
    client, _, _ = env
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    spec = client.get("/openapi.json").json()
    assert {"/v1/trades", "/v1/ohlcv/{timeframe}", "/v1/symbols", "/v1/exchanges", "/v1/status", "/v1/sql",
            "/health", "/ready", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_cached_answers_follow_writes(env):
    """A cached candle answer is replaced as soon as a write touches its pair."""
    client, store, ctx = env
    params = {"exchange": "coinbase", "symbol": "LINK-USD", "start": START_US, "end": START_US + DAY_US}
    before = client.get("/v1/ohlcv/1d", params=params).json()["candles"][0]
    again = client.get("/v1/ohlcv/1d", params=params).json()["candles"][0]
    assert again == before
    hits = ctx_cache_hits(client)
    assert hits >= 1
    row = {"exchange": "coinbase", "symbol": "LINK-USD", "native_symbol": "LINK-USD", "trade_id": 8_000_000_001,
           "price": "99999.123456789", "qty": "2.5", "side": "sell", "ts": START_US + 3_600_000_000, "ts_recv": START_US + 3_600_000_001}
    res = store.insert_trades(trade_table([row]))
    ctx.on_stored(res.stored)
    after = client.get("/v1/ohlcv/1d", params=params).json()["candles"][0]
    assert after["trade_count"] == before["trade_count"] + 1
    assert after["high"] == "99999.123456789"
    assert Decimal(after["volume"]) == Decimal(before["volume"]) + Decimal("2.5")


def ctx_cache_hits(client) -> int:
    return client.app.fastapi.state.cache.hits


def test_newest_first_pages(env, trades):
    client, _, _ = env
    params = {"symbol": "XRP-USD", "start": START_US, "end": END_US, "limit": 50, "order": "desc"}
    seen, cursor = [], None
    while True:
        body = client.get("/v1/trades", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        seen += [(x["ts"], x["exchange"], x["trade_id"]) for x in body["trades"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    want = sorted(((t.ts, t.exchange, t.trade_id) for t in trades if t.symbol == "XRP-USD" and START_US <= t.ts < END_US),
                  reverse=True)
    assert len(want) > 100 and seen == want
    latest = client.get("/v1/trades", params={"symbol": "XRP-USD", "exchange": "kraken", "start": START_US,
                                             "end": END_US, "limit": 1, "order": "desc"}).json()["trades"]
    assert [(latest[0]["ts"], latest[0]["trade_id"])] == [max((t.ts, t.trade_id) for t in trades
                                                             if t.symbol == "XRP-USD" and t.exchange == "kraken")]


def test_refreshed_answers_equal_fresh_ones_after_random_writes(env):
    """Cached candle answers are brought up to date from the first touched bucket; after every write, late or
    new, each equals an uncached computation (stored and rolled-up timeframes)."""
    import random

    from k2.query.service import parse_timeframe

    client, store, ctx = env
    cache = client.app.fastapi.state.cache
    rng = random.Random(5)
    ex, sym, native = "kraken", "ADA-USD", "ADA/USD"
    lo, hi = START_US + 2 * DAY_US, START_US + 4 * DAY_US
    tfs = ["1m", "15m", "1h", "2m", "4h", "1d"]
    refreshes = cache.refreshes
    tid = 9_500_000_000
    for step in range(12):
        for tf in tfs:
            got = client.get(f"/v1/ohlcv/{tf}", params={"exchange": ex, "symbol": sym, "start": lo, "end": hi}).json()
            fresh = ctx.service.ohlcv_json(parse_timeframe(tf), ex, sym, lo, hi)
            assert got == __import__("orjson").loads(fresh), (step, tf)
        rows = []
        for _ in range(rng.randint(1, 4)):
            tid += 1
            ts = rng.randint(lo, hi - 1) if rng.random() < 0.5 else hi - rng.randint(1, 3_600_000_000)
            rows.append({"exchange": ex, "symbol": sym, "native_symbol": native, "trade_id": tid,
                         "price": f"{rng.randint(1, 10**6)}.{rng.randint(0, 10**8):08d}", "qty": f"0.{rng.randint(1, 10**8):08d}",
                         "side": rng.choice(["buy", "sell"]), "ts": ts, "ts_recv": ts + 10})
        res = store.insert_trades(trade_table(rows))
        ctx.on_stored(res.stored)
    assert cache.refreshes - refreshes >= 30  # answers were refreshed, not recomputed


def test_generations_know_what_they_forgot():
    from k2.api.cache import Generations

    g = Generations()
    p = ("binance", "BTC-USDT")
    t0 = g.token([p])
    g.bump({p: 500})
    g.bump({p: 300})
    assert g.touched_since(t0, [p]) == 300
    t1 = g.token([p])
    assert g.touched_since(t1, [p]) is None  # nothing written since (a hit anyway)
    g.bump([p])  # a write without a time: unknown
    assert g.touched_since(t1, [p]) is None
    t2 = g.token([p])
    for i in range(Generations.HISTORY + 5):
        g.bump({p: 1000 + i})
    assert g.touched_since(t2, [p]) is None  # older than the history kept
    t3 = g.token([p])
    g.bump({p: 7})
    g.bump_all()
    assert g.touched_since(t3, [p]) is None  # offload/retention: recompute


@pytest.mark.parametrize("serve_previous", [True, False])
def test_requests_during_a_refresh_get_the_previous_answer_or_wait(serve_previous):
    import asyncio

    from k2.api.cache import AnswerCache, Generations

    p = ("binance", "BTC-USDT")

    async def scenario():
        g = Generations()
        cache = AnswerCache(g, serve_previous=serve_previous)

        async def compute():
            return "v1"

        assert await cache.get("k", [p], compute) == "v1"
        g.bump({p: 5})
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_refresh(old, since):
            assert (old, since) == ("v1", 5)
            started.set()
            await release.wait()
            return "v2"

        owner = asyncio.create_task(cache.get("k", [p], compute, slow_refresh))
        await started.wait()
        other = asyncio.create_task(cache.get("k", [p], compute, slow_refresh))
        await asyncio.sleep(0.01)
        if serve_previous:
            assert other.done() and other.result() == "v1"  # at once, the last complete answer
        else:
            assert not other.done()  # waits for the refresh
        release.set()
        assert await owner == "v2" and await other == ("v1" if serve_previous else "v2")
        assert await cache.get("k", [p], compute, slow_refresh) == "v2"  # and never older than that again
        return cache

    cache = asyncio.run(scenario())
    assert (cache.previous, cache.shared) == ((1, 0) if serve_previous else (0, 1))
