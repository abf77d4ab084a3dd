#!/usr/bin/env python
"""The cold tier: offload throughput, cold candle reads, and a query over a store whose older half is cold.

    python benchmarks/bench_cold.py --trades 10000000 --days 30 --runs 3     # full size (~6 min here)
    python benchmarks/bench_cold.py --trades 500000 --days 30 --runs 2       # quick run

1. Data: ``--trades`` synthetic trades over the 34 default pairs and ``--days`` UTC days (the generator of
   bench_query.py), inserted into a fresh hot store through ``ChdbStore.insert_trades`` one day per insert, so
   dedup, candle views and ``ingest_seq`` are as in production.
2. Offload: ``--runs`` times, on a fresh Iceberg catalog + warehouse each time, one ``Offloader`` cycle. Reported:
   the trades phase (hot read + Iceberg appends with the watermark, ``offload_batch_rows`` per commit) in
   rows/s, then the candles (6 timeframes, computed from the cold trades) and raw phases. Target: trades
   >= 1,000,000 rows/s. After each run, cold row count == hot row count is checked.
3. Retention as ``k2 up`` does it, with the clock at the end of the data and 15 days of hot retention for
   trades and candles: the older half of trades and candles leaves the hot tier (after the checked comparison).
4. Queries (p50 over ``--qruns``):
   C1  a month (the whole span) of 1m candles of binance BTC-USDT from the cold tier (``cold_ohlcv_1m``, the
       Iceberg table read by the embedded ClickHouse). Target < 100 ms.
   C2  the daily volume and VWAP of every pair over the whole store from the ``trades`` view, half of it in
       cold (the core issue's Q3). Target < 1 s. Its result is compared exactly with the same query run on the
       hot tier before retention.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from _machine import cpu_model
from bench_query import DAY_US, WORK, allocate, day_table, generate_pair, pair_specs, stats, timed

VWAP_SQL = """SELECT exchange, symbol, toDate(ts) AS day, sum(qty) AS volume, sum(price * qty) / sum(qty) AS vwap,
    count() AS trades
FROM trades GROUP BY exchange, symbol, day ORDER BY exchange, symbol, day"""


def wait_for_merges(store, timeout: float = 600.0) -> float:
    """Until no mutation is pending and no merge runs (three checks in a row)."""
    t = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t < timeout:
        busy = store.query_arrow(
            "SELECT (SELECT count() FROM system.merges) + (SELECT count() FROM system.mutations WHERE NOT is_done) AS n"
        ).column(0)[0].as_py()
        quiet = quiet + 1 if busy == 0 else 0
        if quiet >= 3:
            break
        time.sleep(1.0)
    return time.perf_counter() - t


def build_hot(args, root: Path):
    from k2.hot.chdb_store import ChdbStore

    specs = pair_specs()
    t0 = int(datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)
    counts = allocate(args.trades, [s["weight"] for s in specs])
    pairs = [generate_pair(s, int(c), t0, t0 + args.days * DAY_US, args.seed, i) for i, (s, c) in enumerate(zip(specs, counts))]
    store = ChdbStore(root)
    tick = time.perf_counter()
    for d in range(args.days):
        lo_hi = [tuple(np.searchsorted(p["ts"], [t0 + d * DAY_US, t0 + (d + 1) * DAY_US])) for p in pairs]
        res = store.insert_trades(day_table(specs, pairs, lo_hi))
        assert res.duplicates == 0
    n = store.query_arrow("SELECT count() FROM trades_store").column(0)[0].as_py()
    assert n == args.trades, n
    print(f"hot store: {n:,} trades over {args.days} days, loaded in {time.perf_counter() - tick:.1f} s", flush=True)
    return store, t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--start", default="2026-06-15")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=3, help="offload runs, each on a fresh catalog")
    ap.add_argument("--qruns", type=int, default=20)
    args = ap.parse_args(argv)

    from k2.cold.catalog import open_catalog
    from k2.cold.offload import OffloadResult, Offloader
    from k2.cold.tiers import apply_retention, install_cold_tables
    from k2.settings import load_settings

    root = WORK / f"cold-{args.trades}-{args.days}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    print(f"bench_cold: {cpu_model()}, chdb {metadata.version('chdb')}, pyiceberg {metadata.version('pyiceberg')}")
    print("command: python benchmarks/bench_cold.py " + shlex.join(argv if argv is not None else sys.argv[1:]), flush=True)
    settings = load_settings(None, data_dir=str(root), cold={"hot_retention_days": 15, "hot_candle_retention_days": 15})
    store, t0 = build_hot(args, root)
    end = t0 + args.days * DAY_US
    try:
        hot_vwap = store.query_arrow(VWAP_SQL)
        trade_rates, cycle_s, candle_s, raw_s = [], [], [], []
        for run in range(args.runs):
            shutil.rmtree(root / "cold", ignore_errors=True)
            catalog = open_catalog(settings)
            off = Offloader(store, catalog, settings, clock=lambda: end + 3_600_000_000)
            res = OffloadResult()
            tick = time.perf_counter()
            moved, wm = off._offload_trades(res)
            t_trades = time.perf_counter() - tick
            tick = time.perf_counter()
            off._offload_candles(wm, res)
            t_candles = time.perf_counter() - tick
            tick = time.perf_counter()
            off._offload_raw(res)
            t_raw = time.perf_counter() - tick
            cold_n = catalog.load_table("k2.trades").scan(selected_fields=("trade_id",)).to_arrow().num_rows
            assert moved == args.trades == cold_n, (moved, cold_n)
            trade_rates.append(moved / t_trades)
            cycle_s.append(t_trades + t_candles + t_raw)
            candle_s.append(t_candles)
            raw_s.append(t_raw)
            print(f"  run {run + 1}: trades {moved:,} in {t_trades:.2f} s ({moved / t_trades:,.0f} rows/s, "
                  f"{res.commits} commits), candles {t_candles:.2f} s ({sum(res.candles.values()):,} rows), "
                  f"raw {t_raw:.2f} s", flush=True)

        kept = apply_retention(store, catalog, settings, end + 3_600_000_000)
        install_cold_tables(store, catalog, settings)
        waited = wait_for_merges(store)  # the DELETEs' mutations and merges: measure the steady state
        hot_left = store.query_arrow("SELECT count() FROM trades_store").column(0)[0].as_py()
        print(f"retention: {kept.trades_dropped:,} trades left the hot tier ({kept.partitions_checked} partitions "
              f"checked); {hot_left:,} stay hot; 1m candles dropped: {kept.candle_buckets_dropped.get('1m', 0):,}; "
              f"waited {waited:.1f} s for mutations and merges")

        d0 = datetime.fromtimestamp(t0 / 1e6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        d1 = datetime.fromtimestamp(end / 1e6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        c1 = (f"SELECT bucket, open, high, low, close, volume, quote_volume, vwap, trade_count FROM cold_ohlcv_1m "
              f"WHERE exchange = 'binance' AND symbol = 'BTC-USDT' AND bucket >= toDateTime64('{d0}', 6, 'UTC') "
              f"AND bucket < toDateTime64('{d1}', 6, 'UTC') ORDER BY bucket")
        rows_c1 = store.query_arrow(c1).num_rows
        hot_c1 = store.query_arrow(
            "SELECT count() FROM ohlcv_1m WHERE exchange = 'binance' AND symbol = 'BTC-USDT'").column(0)[0].as_py()
        assert rows_c1 == hot_c1, (rows_c1, hot_c1)
        c1_ms = stats(timed(lambda: store.query_arrow(c1), args.qruns, 3))
        cold_vwap = store.query_arrow(VWAP_SQL)
        assert cold_vwap.equals(hot_vwap), "VWAP over hot + cold differs from the hot-only result"
        c2_ms = stats(timed(lambda: store.query_arrow(VWAP_SQL), max(5, args.qruns // 3), 1))
    finally:
        store.close()

    med = float(np.median(trade_rates))
    print()
    print(f"| measure | median | range ({args.runs} runs) | target | |")
    print("|---|---:|---|---|---|")
    print(f"| offload {args.trades:,} trades: trades phase, rows/s | {med:,.0f} | {min(trade_rates):,.0f} - "
          f"{max(trade_rates):,.0f} | >= 1,000,000 | {'met' if med >= 1_000_000 else 'NOT met'} |")
    print(f"| offload: whole cycle (trades + 6 candle tables + raw), s | {np.median(cycle_s):.2f} | "
          f"{min(cycle_s):.2f} - {max(cycle_s):.2f} | | |")
    print(f"| offload: candle phase, s | {np.median(candle_s):.2f} | {min(candle_s):.2f} - {max(candle_s):.2f} | | |")
    print()
    print("| query | p50 ms | p99 ms | runs | rows | target | |")
    print("|---|---:|---:|---:|---:|---|---|")
    print(f"| C1 a month of 1m candles, binance BTC-USDT, cold tier | {c1_ms['p50']:.1f} | {c1_ms['p99']:.1f} | "
          f"{c1_ms['n']} | {rows_c1:,} | < 100 ms | {'met' if c1_ms['p50'] < 100 else 'NOT met'} |")
    print(f"| C2 daily volume + VWAP of every pair, `trades` (older half cold) | {c2_ms['p50']:.1f} | {c2_ms['p99']:.1f} | "
          f"{c2_ms['n']} | {cold_vwap.num_rows:,} | < 1000 ms | {'met' if c2_ms['p50'] < 1000 else 'NOT met'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
