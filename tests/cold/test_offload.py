"""Exactly-once offload: cold == hot value for value after crashes at every step, late trades, concurrent ingest."""

from __future__ import annotations

import threading
from collections import namedtuple
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.capture.synth import write_synthetic_capture
from k2.cold.catalog import open_catalog
from k2.cold.offload import CANDLE_CLOSED_KEY, SEQ_KEY, Offloader, SimulatedCrash, latest_property
from k2.cold.tables import candle_table
from k2.hot.chdb_store import ChdbStore
from k2.hot.ddl import TIMEFRAME_SECONDS
from k2.model.trade import EXACT, TRADE_SCHEMA
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from tests.candles import recompute

T0 = 1_784_073_600_000_000  # 2026-07-15, the synthetic captures' start
NOW = T0 + 10 * 86_400 * 1_000_000  # every bucket of the data is closed
CRASH_POINTS = [
    "trades:before_commit",
    "trades:after_commit",
    *[f"candles:{tf}:{when}" for tf in ("1m", "5m", "1d") for when in ("before_commit", "after_commit")],
    "raw:before_commit",
    "raw:after_commit",
]
Row = namedtuple("Row", "exchange symbol trade_id price qty ts")


@pytest.fixture
def env(tmp_path, parsers):
    settings = load_settings(None, data_dir=str(tmp_path / "data"), cold={"offload_batch_rows": 1_500})
    store = ChdbStore(settings.data_dir)
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 4_000, seed=11, rate=40.0)  # ~100 s of trading: several 1m buckets
    replay_files([cap], store, parsers)
    yield settings, store, open_catalog(settings)
    store.close()


def hot_trades(store) -> dict:
    rows = store.query_arrow(
        "SELECT exchange, symbol, trade_id, price, qty, toString(side) AS side, toUnixTimestamp64Micro(ts) AS ts, "
        "toUnixTimestamp64Micro(ts_recv) AS ts_recv, native_symbol, ingest_seq FROM trades_store"
    ).to_pylist()
    return {(r["exchange"], r["symbol"], r["trade_id"]): r for r in rows}


def cold_trades(catalog) -> dict:
    t = catalog.load_table("k2.trades").scan().to_arrow()
    ts = pc.cast(t.column("ts"), pa.int64()).to_pylist()
    tr = pc.cast(t.column("ts_recv"), pa.int64()).to_pylist()
    out = {}
    for i, r in enumerate(t.drop_columns(["ts", "ts_recv"]).to_pylist()):
        r["ts"], r["ts_recv"] = ts[i], tr[i]
        key = (r["exchange"], r["symbol"], r["trade_id"])
        assert key not in out, f"duplicate in cold: {key}"
        out[key] = r
    return out


def cold_candles(catalog, tf: str) -> dict:
    t = catalog.load_table(candle_table(tf)).scan().to_arrow()
    b = pc.cast(t.column("bucket"), pa.int64()).to_pylist()
    out = {}
    for i, r in enumerate(t.to_pylist()):
        key = (r["exchange"], r["symbol"], b[i] // 1_000_000)
        assert key not in out, f"duplicate candle {key}"
        out[key] = (r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"], r["vwap"], r["trade_count"])
    return out


def check_cold_equals_hot(store, catalog, closed_until: int = NOW) -> None:
    hot, cold = hot_trades(store), cold_trades(catalog)
    assert set(cold) == set(hot)
    for k, h in hot.items():
        c = cold[k]
        for name in ("price", "qty", "side", "ts", "ts_recv", "native_symbol", "ingest_seq"):
            assert c[name] == h[name], (k, name, c[name], h[name])
    rows = [Row(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["qty"], r["ts"]) for r in cold.values()]
    for tf in ("1m", "5m", "15m", "30m", "1h", "1d"):
        width = TIMEFRAME_SECONDS[tf]
        want = {k: v for k, v in recompute(rows, tf).items() if (k[2] + width) * 1_000_000 <= closed_until}
        got = cold_candles(catalog, tf)
        assert set(got) == set(want), tf
        for k, v in want.items():
            assert tuple(x.normalize(EXACT) if isinstance(x, Decimal) else x for x in got[k]) == tuple(
                x.normalize(EXACT) if isinstance(x, Decimal) else x for x in v
            ), (tf, k)


def test_one_cycle_moves_everything_exactly(env):
    settings, store, catalog = env
    res = Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    assert res.trades == 4_000 and res.commits >= 3 + 6 + 1  # 3 trade batches of <= 1500, 6 candle tables, raw
    check_cold_equals_hot(store, catalog)
    raw_hot = store.query_arrow("SELECT count() FROM raw_frames").column(0)[0].as_py()
    assert catalog.load_table("k2.raw_frames").scan().to_arrow().num_rows == raw_hot
    assert latest_property(catalog.load_table("k2.trades"), SEQ_KEY) == str(res.trade_watermark)
    again = Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    assert again.trades == 0 and again.raw_frames == 0 and again.commits == 0
    check_cold_equals_hot(store, catalog)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_any_step_then_rerun_gives_cold_equal_hot(env, point):
    settings, store, catalog = env
    with pytest.raises(SimulatedCrash):
        Offloader(store, catalog, settings, clock=lambda: NOW, crash_at=point).run_cycle()
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    check_cold_equals_hot(store, catalog)
    raw_hot = store.query_arrow("SELECT count() FROM raw_frames").column(0)[0].as_py()
    assert catalog.load_table("k2.raw_frames").scan().to_arrow().num_rows == raw_hot


def late_trades(store, n: int, ts: int) -> pa.Table:
    """``n`` new BTC-USDT trades with ids above the stored ones and exchange time ``ts`` (an old bucket)."""
    top = store.query_arrow("SELECT max(trade_id) FROM trades_store WHERE symbol = 'BTC-USDT'").column(0)[0].as_py()
    return pa.Table.from_pydict(
        {
            "exchange": ["binance"] * n, "symbol": ["BTC-USDT"] * n, "native_symbol": ["BTCUSDT"] * n,
            "trade_id": pa.array(np.arange(top + 1, top + 1 + n, dtype=np.uint64)),
            "price": [Decimal("99999.99")] * n, "qty": [Decimal("0.00012345")] * n, "side": ["sell"] * n,
            "ts": [ts + i for i in range(n)], "ts_recv": [NOW] * n,
        },
        schema=TRADE_SCHEMA,
    )


def test_late_trades_reach_cold_and_fix_closed_candles(env):
    settings, store, catalog = env
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    before = cold_candles(catalog, "1m")
    store.insert_trades(late_trades(store, 3, T0 + 5_000_000))  # into the first, long closed, minute
    res = Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    assert res.trades == 3 and res.candles["1m"] == 1 and res.candles["1d"] == 1
    check_cold_equals_hot(store, catalog)
    after = cold_candles(catalog, "1m")
    key = ("binance", "BTC-USDT", T0 // 1_000_000)
    assert after[key][7] == before[key][7] + 3 and after[key][2] == Decimal("99999.99")


def test_open_buckets_wait_until_closed(env):
    settings, store, catalog = env
    first_minute_end = T0 + 60_000_000
    clock = [first_minute_end + 60_000_000]  # grace 60 s: only the first minute is closed
    off = Offloader(store, catalog, settings, clock=lambda: clock[0])
    off.run_cycle()
    got = cold_candles(catalog, "1m")
    assert got and {k[2] for k in got} == {T0 // 1_000_000}
    assert cold_candles(catalog, "1d") == {}
    assert int(latest_property(catalog.load_table("k2.ohlcv_1m"), CANDLE_CLOSED_KEY)) == T0 + 60_000_000
    clock[0] = NOW
    off.run_cycle()
    check_cold_equals_hot(store, catalog)


def test_offload_while_ingest_continues(tmp_path, env, parsers):
    settings, store, catalog = env
    cap = tmp_path / "more.jsonl"
    write_synthetic_capture(cap, 10_000, seed=12, rate=40.0, start_us=T0 + 3_600_000_000, id_offset=500_000)
    errors = []

    def ingest():
        try:
            replay_files([cap], store, parsers, chunk_lines=500, writer_rows=500)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=ingest)
    t.start()
    off = Offloader(store, catalog, settings, clock=lambda: NOW)
    cycles, partial = 0, False
    while t.is_alive() and cycles < 50:
        off.run_cycle()
        cycles += 1
        partial = partial or (t.is_alive() and len(cold_trades(catalog)) < 14_000)
    t.join(60)
    assert not errors and cycles >= 1 and partial  # at least one cycle ran mid-ingest
    off.run_cycle()
    check_cold_equals_hot(store, catalog)
