"""WS /v1/stream (stored trades and candle updates) and the notebook client (local and remote)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pyarrow as pa
import pytest

import k2
from k2.api.server import build_context, start_api
from k2.api.stream import decimal_strings
from k2.client import ApiError, LocalClient
from tests.api.conftest import START_US, make_settings, trade_table

NEW_TS = START_US + 20 * 86_400 * 1_000_000  # after everything in the fixture


def _trade(ex, sym, native, tid, price, qty, ts, side="buy"):
    return {"exchange": ex, "symbol": sym, "native_symbol": native, "trade_id": tid, "price": price, "qty": qty,
            "side": side, "ts": ts, "ts_recv": ts + 1500}


def _store(store, ctx, rows):
    res = store.insert_trades(trade_table(rows))
    if res.stored is not None:
        ctx.on_stored(res.stored)
    return res


def test_decimal_strings_match_clickhouse():
    col = pa.array([Decimal("67012.340000000000000000"), Decimal("100"), Decimal("0"), Decimal("0.000000000000000001")],
                   pa.decimal128(38, 18))
    assert decimal_strings(col).to_pylist() == ["67012.34", "100", "0", "0.000000000000000001"]


def test_stream_sends_stored_trades_and_candles(env):
    client, store, ctx = env
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"op": "subscribe", "symbols": ["binance:BTC-USDT", "kraken:ETH-USD"], "channels": ["trades", "candles"],
                      "timeframes": ["1m", "1h"]})
        ack = ws.receive_json()
        assert ack == {"type": "subscribed", "symbols": ["binance:BTC-USDT", "kraken:ETH-USD"],
                       "channels": ["candles", "trades"], "timeframes": ["1m", "1h"]}
        rows = [
            _trade("binance", "BTC-USDT", "BTCUSDT", 7_000_000_001, "70000.10", "0.5", NEW_TS + 1_000_000),
            _trade("binance", "BTC-USDT", "BTCUSDT", 7_000_000_002, "70001.00000001", "0.25", NEW_TS + 2_000_000, "sell"),
            _trade("binance", "ETH-USDT", "ETHUSDT", 7_000_000_003, "3000", "1", NEW_TS + 2_000_000),  # not subscribed
            _trade("kraken", "ETH-USD", "ETH/USD", 7_000_000_004, "2999.5", "3", NEW_TS + 61_000_000),
        ]
        _store(store, ctx, rows)
        msgs = [ws.receive_json() for _ in range(3)]  # trades, then candles 1m and 1h (either order)
        trades = [m for m in msgs if m["type"] == "trades"]
        assert len(trades) == 1
        got = trades[0]["data"]
        assert [(t["exchange"], t["symbol"], t["trade_id"], t["price"], t["qty"], t["side"], t["ts"], t["ts_recv"])
                for t in got] == [
            ("binance", "BTC-USDT", 7_000_000_001, "70000.1", "0.5", "buy", NEW_TS + 1_000_000, NEW_TS + 1_001_500),
            ("binance", "BTC-USDT", 7_000_000_002, "70001.00000001", "0.25", "sell", NEW_TS + 2_000_000, NEW_TS + 2_001_500),
            ("kraken", "ETH-USD", 7_000_000_004, "2999.5", "3", "buy", NEW_TS + 61_000_000, NEW_TS + 61_001_500),
        ]
        assert trades[0]["stored"] <= trades[0]["sent"]
        candles = {m["timeframe"]: m["data"] for m in msgs if m["type"] == "candles"}
        assert set(candles) == {"1m", "1h"}
        # the streamed candles are the stored ones, value for value
        for tf, data in candles.items():
            for c in data:
                api = client.get(f"/v1/ohlcv/{tf}", params={"exchange": c["exchange"], "symbol": c["symbol"],
                                                           "start": c["bucket"], "end": c["bucket"] + 1}).json()
                assert [dict(c, exchange=None, symbol=None)] == [dict(x, exchange=None, symbol=None) for x in api["candles"]]
        btc_1m = [c for c in candles["1m"] if c["symbol"] == "BTC-USDT"]
        assert btc_1m == [{"exchange": "binance", "symbol": "BTC-USDT", "bucket": NEW_TS, "open": "70000.1",
                           "high": "70001.00000001", "low": "70000.1", "close": "70001.00000001", "volume": "0.75",
                           "quote_volume": "52500.3000000025", "vwap": "70000.400000003333333333", "trade_count": 2}]
        # a duplicate replay stores nothing and streams nothing; the next new trade arrives next
        assert _store(store, ctx, rows).inserted == 0
        _store(store, ctx, [_trade("binance", "BTC-USDT", "BTCUSDT", 7_000_000_005, "70002", "1", NEW_TS + 3_000_000)])
        nxt = ws.receive_json()
        while nxt["type"] != "trades":
            nxt = ws.receive_json()
        assert [t["trade_id"] for t in nxt["data"]] == [7_000_000_005]


def test_stream_subscription_errors_keep_the_connection(env):
    client, store, ctx = env
    with client.websocket_connect("/v1/stream?symbols=BTC-USD&channels=trades") as ws:
        assert ws.receive_json()["symbols"] == ["coinbase:BTC-USD", "kraken:BTC-USD"]
        for bad, fragment in [
            ("not json", "not JSON"),
            ('{"op": "subscribe", "symbols": ["binance:BTC-EUR"]}', "unknown symbol"),
            ('{"op": "subscribe", "symbols": ["BTC-USD"], "timeframes": ["4h"]}', "not streamed"),
            ('{"op": "subscribe", "symbols": ["BTC-USD"], "channels": ["books"]}', "unknown channel"),
            ('{"op": "dance"}', "op must be"),
            ("[1, 2]", "JSON object"),
        ]:
            ws.send_text(bad)
            msg = ws.receive_json()
            assert msg["type"] == "error" and fragment in msg["error"], (bad, msg)
        ws.send_json({"op": "unsubscribe", "symbols": ["kraken:BTC-USD"]})
        assert ws.receive_json()["symbols"] == ["coinbase:BTC-USD"]
        _store(store, ctx, [_trade("kraken", "BTC-USD", "BTC/USD", 7_100_000_001, "70000", "1", NEW_TS),
                            _trade("coinbase", "BTC-USD", "BTC-USD", 7_100_000_002, "70000.5", "2", NEW_TS)])
        msg = ws.receive_json()
        assert msg["type"] == "trades" and [t["exchange"] for t in msg["data"]] == ["coinbase"]


def test_slow_client_is_dropped_not_buffered(env):
    """A client that stops reading fills its bounded queue and is dropped; the others keep getting everything."""
    _, store, ctx = env
    from k2.api.stream import StreamHub

    async def never(_text):  # pragma: no cover - nobody drains the slow client
        await asyncio.Event().wait()

    async def scenario():
        hub = StreamHub(ctx.service, None, queue_size=10)
        slow = hub.new_client(never)
        fast = hub.new_client(never)
        for c in (slow, fast):
            hub.apply(c, {"op": "subscribe", "symbols": ["coinbase:SOL-USD"], "channels": ["trades"]})
        table = trade_table([_trade("coinbase", "SOL-USD", "SOL-USD", 1, "150.25", "1", NEW_TS)])
        for _ in range(12):
            hub._fan_out(NEW_TS, table)
            while not fast.queue.empty():  # the fast client keeps up
                fast.queue.get_nowait()
        return hub, slow, fast

    hub, slow, fast = asyncio.run(scenario())
    assert slow.dropped and slow not in hub.clients and hub.dropped == 1
    assert not fast.dropped and fast in hub.clients
    assert slow.queue.qsize() == 10  # bounded: nothing beyond the queue was kept


# -- the notebook client --------------------------------------------------------------------------------
def test_local_and_remote_clients_agree(data_dir, tmp_path):
    settings = make_settings(data_dir, port=0)
    results = {}

    # local first (it opens the store in this process), then the API over the same store
    local = LocalClient(data_dir)
    try:
        results["local_ohlcv"] = local.ohlcv("kraken", "BTC-USD", "4h", start="2026-07-15", end="2026-07-20")
        results["local_trades"] = local.trades("ETH-USD", start=START_US, end=START_US + 86_400_000_000)
        results["local_sql"] = local.sql("SELECT exchange, sum(qty) AS v FROM trades GROUP BY exchange ORDER BY exchange")

        async def serve_and_ask():
            ctx = build_context(settings, local.store, mode="serve", with_metrics=False)
            server = await start_api(ctx, "127.0.0.1", 0)
            try:
                def remote_calls():
                    with k2.connect(server.url) as rc:
                        results["remote_ohlcv"] = rc.ohlcv("kraken", "BTC-USD", "4h", start="2026-07-15", end="2026-07-20")
                        results["remote_trades"] = rc.trades("ETH-USD", start=START_US, end=START_US + 86_400_000_000)
                        results["remote_sql"] = rc.sql(
                            "SELECT exchange, sum(qty) AS v FROM trades GROUP BY exchange ORDER BY exchange")
                        results["pandas"] = rc.ohlcv("kraken", "BTC-USD", "1d", start="2026-07-15", end="2026-07-20",
                                                     frame="pandas")
                        with pytest.raises(ApiError) as exc:
                            rc.ohlcv("kraken", "BTC-USDT", "1h")
                        results["error"] = exc.value
                        results["symbols"] = rc.symbols()

                await asyncio.to_thread(remote_calls)
            finally:
                await server.stop()

        asyncio.run(serve_and_ask())
    finally:
        local.close()
    for what in ("ohlcv", "trades", "sql"):
        assert results[f"local_{what}"].num_rows > 0
        assert results[f"remote_{what}"].equals(results[f"local_{what}"]), what
    o = results["local_ohlcv"]
    assert o.schema.field("open").type == pa.decimal128(38, 18)
    assert o.schema.field("bucket").type == pa.timestamp("us", tz="UTC")
    df = results["pandas"]
    assert isinstance(df["vwap"].iloc[0], Decimal) and str(df["bucket"].dtype) == "datetime64[us, UTC]"
    assert results["error"].status == 400 and "unknown symbol" in str(results["error"])
    assert len(results["symbols"]) == 34


def test_connect_picks_the_client(tmp_path):
    from k2.client import RemoteClient

    c = k2.connect("http://127.0.0.1:1")
    assert isinstance(c, RemoteClient)
    c.close()
    with pytest.raises(Exception, match="api_key is for a remote API"):
        k2.connect(tmp_path, api_key="x" * 20)


def test_threads_do_not_leak():
    assert all(t.name != "k2-hot-writer" for t in threading.enumerate())
