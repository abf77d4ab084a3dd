#!/usr/bin/env python
"""Query latency of the K2 hot store (chdb, through the public views) against DuckDB over the same trades in Parquet.

    pip install -e '.[bench]'
    python benchmarks/bench_query.py --trades 33000000            # full size
    python benchmarks/bench_query.py --trades 2000000             # quick run
    python benchmarks/bench_query.py --trades 33000000 --levers   # + levers, measured on a COPY of the store

Data: ``--trades`` synthetic trades over the 34 default pairs (``InstrumentTable.default()``), ``--days`` UTC days
from ``--start``; per pair a log random walk around a realistic price, 2-7 price decimals, sizes with 0-8
decimals, contiguous trade ids, BTC/ETH pairs busier. Everything is generated vectorized (numpy -> pyarrow; the
decimal128(38,18) columns are built from integer units of 1e-8 and rescaled by pyarrow, checked exact on a
sample). The store is built through ``ChdbStore.insert_trades`` one UTC day (~1M rows at 33M) per insert, so the
deduplication path and the candle materialized views run as in production; each day is also written as a
zstd Parquet file (sorted by pair, ts; 122,880-row row groups) for DuckDB. Both are cached under
``benchmarks/.work/<key>/`` (key: size, days, start, seed, hash of the trades/candle DDL) and reused on
reruns (``--rebuild`` to force).

Queries (same question, each engine written the way a user would write it; results compared):
  Q1  one UTC day of 1m candles of binance BTC-USDT: K2 reads ``ohlcv_1m``; DuckDB aggregates trades with
      arg_min/arg_max ordered by (ts, trade_id).
  Q2  all trades of binance BTC-USDT in one minute, ordered by (ts, trade_id).
  Q3  daily volume and VWAP of every pair over the whole history, from ``trades``, written plainly on K2
      (``sum(price * qty) / sum(qty)``: the view shows price and qty as Decimal(76,18), so the product is an
      exact Decimal(76,36); on Decimal(38,18) columns ClickHouse would overflow silently). DuckDB refuses the
      bare product of two DECIMAL(38,18), so it uses ``price::DECIMAL(38,10) * qty::DECIMAL(38,10)`` (exact for
      <= 10 decimals, as here). VWAPs are compared to 1e-12 relative, everything else exactly.
Times are wall-clock in Python, from SQL text to a pyarrow Table, after warm-up runs. After the table, "Q1 by
phase" splits Q1 by ClickHouse's own counters (system.events: parse, analysis, plan build, plan optimisation,
pipeline build, the statement's whole time) as K2 serves it (views inlined by the analyzer) and with the view
planned apart, the two alternating on the same store. ``--levers`` copies the
store and measures, on the copy only: Q3 settings/expression variants, the 1d candles, narrower column types,
a PROJECTION with the daily aggregates queried through the unchanged ``trades`` view (and its insert cost), and
the 1m candle store at a finer index granularity for Q1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from _machine import cpu_model
from k2.model import DECIMAL_TYPE, TRADE_SCHEMA, InstrumentTable

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
UNIT_SCALE = 8  # generated prices/sizes are integers of 1e-8
DAY_US = 86_400_000_000

# ----------------------------------------------------------------------------- synthetic market

BASE_PRICE = {"BTC": 117_000.0, "ETH": 3_400.0, "BNB": 700.0, "SOL": 165.0, "XRP": 2.9, "ADA": 0.75,
              "DOT": 4.2, "LINK": 17.5, "DOGE": 0.21, "LTC": 95.0, "AVAX": 22.0, "ATOM": 4.6}
PRICE_DEC = {"BTC": 2, "ETH": 2, "BNB": 2, "SOL": 2, "XRP": 4, "ADA": 4, "DOT": 3, "LINK": 3, "DOGE": 5,
             "LTC": 2, "AVAX": 2, "ATOM": 3}
KRAKEN_PRICE_DEC = {"XRP": 5, "ADA": 6, "DOT": 4, "LINK": 5, "DOGE": 7, "ATOM": 4}
BINANCE_QTY_DEC = {"BTC": 5, "ETH": 4, "BNB": 3, "SOL": 3, "XRP": 1, "ADA": 1, "DOT": 2, "LINK": 2, "DOGE": 0,
                   "LTC": 3, "AVAX": 2, "ATOM": 2}
EXCHANGE_WEIGHT = {"binance": 1.0, "coinbase": 0.45, "kraken": 0.25}
BASE_WEIGHT = {"BTC": 14.0, "ETH": 9.0}  # others 2.5 (x exchange weight)
TID_START = {"binance": 4_800_000_000, "coinbase": 860_000_000, "kraken": 95_000_000}


def pair_specs() -> list[dict]:
    specs = []
    for i, inst in enumerate(InstrumentTable.default()):
        pdec = PRICE_DEC[inst.base]
        if inst.exchange == "kraken":
            pdec = KRAKEN_PRICE_DEC.get(inst.base, pdec)
        qdec = BINANCE_QTY_DEC[inst.base] if inst.exchange == "binance" else 8
        specs.append(dict(
            exchange=inst.exchange, symbol=inst.symbol, native=inst.native_symbol, base=inst.base,
            price0=BASE_PRICE[inst.base] * (1 + 0.0004 * (i % 5)), pdec=pdec, qdec=qdec,
            weight=BASE_WEIGHT.get(inst.base, 2.5) * EXCHANGE_WEIGHT[inst.exchange],
            tid0=TID_START[inst.exchange] + 7_919_000 * i,
        ))
    return specs


def allocate(n: int, weights: list[float]) -> np.ndarray:
    w = np.asarray(weights) / sum(weights)
    counts = np.floor(w * n).astype(np.int64)
    counts[np.argmax(w)] += n - counts.sum()
    return counts


def generate_pair(spec: dict, n: int, t0: int, t1: int, seed: int, idx: int) -> dict:
    """One pair's whole history, vectorized. Prices/sizes as int64 units of 1e-8, ts in µs."""
    rng = np.random.default_rng([seed, idx])
    ts = np.sort(rng.integers(t0, t1, n, dtype=np.int64))
    sigma = 0.16 / np.sqrt(max(n, 1))  # ~16% over the whole span, ~3%/day
    logp = np.log(spec["price0"]) + np.cumsum(rng.standard_normal(n) * sigma)
    price = np.exp(logp)
    ticks = np.maximum(np.rint(price * 10.0 ** spec["pdec"]), 1).astype(np.int64)
    price_u = ticks * 10 ** (UNIT_SCALE - spec["pdec"])
    notional = np.exp(rng.normal(np.log(150.0), 1.5, n))  # quote currency, median ~150
    lots = np.maximum(np.rint(notional / price * 10.0 ** spec["qdec"]), 1).astype(np.int64)
    qty_u = lots * 10 ** (UNIT_SCALE - spec["qdec"])
    side = rng.integers(0, 2, n, dtype=np.int8)
    lat = rng.integers(300, 250_000, n, dtype=np.int64)  # receive latency µs
    return dict(ts=ts, price=price_u, qty=qty_u, side=side, lat=lat)


def decimal_from_units(units: np.ndarray) -> pa.Array:
    """int64 units of 1e-8 -> exact decimal128(38, 18) (built at scale 8, rescaled by pyarrow)."""
    n = len(units)
    buf = np.empty((n, 2), dtype=np.int64)
    buf[:, 0] = units
    buf[:, 1] = units >> 63  # sign extension of the 128-bit integer
    arr = pa.Array.from_buffers(pa.decimal128(38, UNIT_SCALE), n, [None, pa.py_buffer(buf)])
    return arr.cast(DECIMAL_TYPE)


def day_table(specs, pairs, lo_hi) -> pa.Table:
    """The trades of one UTC day as a TRADE_SCHEMA table, ordered by (pair, ts)."""
    pidx, ts, price, qty, side, lat, tid = [], [], [], [], [], [], []
    for i, (lo, hi) in enumerate(lo_hi):
        if hi <= lo:
            continue
        p = pairs[i]
        pidx.append(np.full(hi - lo, i, dtype=np.int32))
        ts.append(p["ts"][lo:hi])
        price.append(p["price"][lo:hi])
        qty.append(p["qty"][lo:hi])
        side.append(p["side"][lo:hi])
        lat.append(p["lat"][lo:hi])
        tid.append(np.arange(specs[i]["tid0"] + lo, specs[i]["tid0"] + hi, dtype=np.uint64))
    pidx_a = pa.array(np.concatenate(pidx))
    ts_np = np.concatenate(ts)

    def names(key):
        return pa.array([s[key] for s in specs]).take(pidx_a)

    cols = [
        names("exchange"), names("symbol"), names("native"),
        pa.array(np.concatenate(tid)),
        decimal_from_units(np.concatenate(price)),
        decimal_from_units(np.concatenate(qty)),
        pa.array(["buy", "sell"]).take(pa.array(np.concatenate(side))),
        pa.array(ts_np.view("datetime64[us]")).cast(TRADE_SCHEMA.field("ts").type),
        pa.array((ts_np + np.concatenate(lat)).view("datetime64[us]")).cast(TRADE_SCHEMA.field("ts_recv").type),
    ]
    return pa.Table.from_arrays(cols, schema=TRADE_SCHEMA)


def check_exact(table: pa.Table, price_u: np.ndarray, qty_u: np.ndarray, rng) -> None:
    idx = rng.choice(table.num_rows, size=min(2000, table.num_rows), replace=False)
    scale = Decimal(10) ** UNIT_SCALE
    for i in idx:
        i = int(i)
        assert table["price"][i].as_py() == Decimal(int(price_u[i])) / scale, (i, table["price"][i])
        assert table["qty"][i].as_py() == Decimal(int(qty_u[i])) / scale, (i, table["qty"][i])


# ----------------------------------------------------------------------------- build / cache


def wait_for_merges(store, timeout: float = 600.0) -> float:
    t = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t < timeout:
        n = store.query_arrow("SELECT count() AS n FROM system.merges")["n"][0].as_py()
        quiet = quiet + 1 if n == 0 else 0
        if quiet >= 3:
            break
        time.sleep(1.0)
    return time.perf_counter() - t


def parts_summary(store) -> dict[str, int]:
    t = store.query_arrow(
        "SELECT table, count() AS parts FROM system.parts WHERE active AND database = currentDatabase() "
        "AND (table = 'trades_store' OR table LIKE 'ohlcv_%_store') GROUP BY table ORDER BY table")
    return dict(zip(t["table"].to_pylist(), t["parts"].to_pylist()))


def build(args, root: Path) -> dict:
    from k2.hot.chdb_store import ChdbStore

    if root.exists():
        shutil.rmtree(root)
    (root / "parquet").mkdir(parents=True)
    specs = pair_specs()
    t0 = int(datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)
    t1 = t0 + args.days * DAY_US
    counts = allocate(args.trades, [s["weight"] for s in specs])

    tick = time.perf_counter()
    pairs = [generate_pair(s, int(c), t0, t1, args.seed, i) for i, (s, c) in enumerate(zip(specs, counts))]
    gen_s = time.perf_counter() - tick
    print(f"generated {args.trades:,} trades (numpy) in {gen_s:.1f} s", flush=True)

    arrow_s = insert_s = parquet_s = 0.0
    inserted = 0
    n_inserts = 0
    store = ChdbStore(root)
    rng = np.random.default_rng(args.seed)
    try:
        for d in range(args.days):
            lo_t, hi_t = t0 + d * DAY_US, t0 + (d + 1) * DAY_US
            lo_hi = [tuple(np.searchsorted(p["ts"], [lo_t, hi_t])) for p in pairs]
            tick = time.perf_counter()
            table = day_table(specs, pairs, lo_hi)
            arrow_s += time.perf_counter() - tick
            if d == 0:
                check_exact(table,
                            np.concatenate([p["price"][lo:hi] for p, (lo, hi) in zip(pairs, lo_hi)]),
                            np.concatenate([p["qty"][lo:hi] for p, (lo, hi) in zip(pairs, lo_hi)]), rng)
            tick = time.perf_counter()
            day = datetime.fromtimestamp(lo_t / 1e6, timezone.utc).strftime("%Y-%m-%d")
            pq.write_table(table, root / "parquet" / f"trades_{day}.parquet", compression="zstd",
                           row_group_size=122_880)
            parquet_s += time.perf_counter() - tick
            k = max(1, round(table.num_rows / args.batch))
            bounds = np.linspace(0, table.num_rows, k + 1).astype(int)
            tick = time.perf_counter()
            for a, b in zip(bounds[:-1], bounds[1:]):
                res = store.insert_trades(table.slice(a, b - a))
                assert res.inserted == b - a and res.duplicates == 0, res
                inserted += b - a
                n_inserts += 1
            insert_s += time.perf_counter() - tick
            print(f"  day {d + 1:>2}/{args.days} {day}: {table.num_rows:>10,} rows, "
                  f"{inserted:>11,} stored, insert {insert_s:6.1f} s", flush=True)
        del pairs
        merge_s = wait_for_merges(store)
        n = store.query_arrow("SELECT count() AS n FROM trades")["n"][0].as_py()
        nd = store.query_arrow("SELECT sum(trade_count) AS n FROM ohlcv_1d")["n"][0].as_py()
        assert n == args.trades == nd, (n, nd, args.trades)
        parts = parts_summary(store)
    finally:
        store.close()
    manifest = dict(
        trades=args.trades, days=args.days, start=args.start, seed=args.seed, batch=args.batch,
        numpy_s=round(gen_s, 2), arrow_s=round(arrow_s, 2), parquet_s=round(parquet_s, 2),
        insert_s=round(insert_s, 2), inserts=n_inserts, merge_wait_s=round(merge_s, 2), parts_after_build=parts,
        store_bytes=dir_bytes(root / "hot"), parquet_bytes=dir_bytes(root / "parquet"),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ddl_hash() -> str:
    """Short hash of the DDL of trades and candles: a cached store built with other DDL is not reused."""
    import hashlib

    from k2.hot.ddl import MIGRATIONS

    import inspect

    # a migration step that is a function (it looks at the store first) is hashed by its source
    texts = [s if isinstance(s, str) else inspect.getsource(s) for _, (_, stmts) in sorted(MIGRATIONS.items()) for s in stmts]
    text = "\n".join(t for t in texts if "trades" in t or "ohlcv" in t)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------- queries


def queries(args) -> list[dict]:
    start = datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc)
    day = start + timedelta(days=args.days // 2)
    d0, d1 = day.strftime("%Y-%m-%d %H:%M:%S"), (day + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    m = day + timedelta(hours=12, minutes=34)
    m0, m1 = m.strftime("%Y-%m-%d %H:%M:%S"), (m + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    ex, sym = "binance", "BTC-USDT"
    return [
        dict(
            name=f"Q1 1m candles, 1 day, {ex} {sym}", target_ms=10, runs=args.runs, approx={"vwap"},
            k2=f"""SELECT bucket, open, high, low, close, volume, vwap, trade_count FROM ohlcv_1m
WHERE exchange = '{ex}' AND symbol = '{sym}'
  AND bucket >= toDateTime('{d0}', 'UTC') AND bucket < toDateTime('{d1}', 'UTC')
ORDER BY bucket""",
            duck=f"""SELECT date_trunc('minute', ts) AS bucket,
    arg_min(price, (ts, trade_id)) AS open, max(price) AS high, min(price) AS low,
    arg_max(price, (ts, trade_id)) AS close, sum(qty) AS volume,
    sum(price::DECIMAL(38,10) * qty::DECIMAL(38,10)) / sum(qty) AS vwap, count(*) AS trade_count
FROM trades
WHERE exchange = '{ex}' AND symbol = '{sym}' AND ts >= TIMESTAMPTZ '{d0}+00' AND ts < TIMESTAMPTZ '{d1}+00'
GROUP BY 1 ORDER BY 1""",
        ),
        dict(
            name=f"Q2 trades, 1 minute, {ex} {sym}", target_ms=20, runs=args.runs, approx=set(),
            k2=f"""SELECT trade_id, price, qty, side, ts FROM trades
WHERE exchange = '{ex}' AND symbol = '{sym}'
  AND ts >= toDateTime64('{m0}', 6, 'UTC') AND ts < toDateTime64('{m1}', 6, 'UTC')
ORDER BY ts, trade_id""",
            duck=f"""SELECT trade_id, price, qty, side, ts FROM trades
WHERE exchange = '{ex}' AND symbol = '{sym}' AND ts >= TIMESTAMPTZ '{m0}+00' AND ts < TIMESTAMPTZ '{m1}+00'
ORDER BY ts, trade_id""",
        ),
        dict(
            name="Q3 daily volume+VWAP, all pairs, all history", target_ms=500, runs=args.big_runs, approx={"vwap"},
            k2=Q3_K2,
            duck="""SELECT exchange, symbol, ts::DATE AS d, sum(qty) AS volume,
    sum(price::DECIMAL(38,10) * qty::DECIMAL(38,10)) / sum(qty) AS vwap, count(*) AS trades
FROM trades GROUP BY exchange, symbol, d ORDER BY exchange, symbol, d""",
        ),
    ]


Q3_K2 = """SELECT exchange, symbol, toDate(ts) AS d, sum(qty) AS volume,
    sum(price * qty) / sum(qty) AS vwap, count() AS trades
FROM trades GROUP BY exchange, symbol, d ORDER BY exchange, symbol, d"""


def canon(table: pa.Table, approx: set[str]) -> list[tuple]:
    """Rows as comparable tuples: timestamps/dates -> int µs/days, decimals -> normalized Decimal, approx -> float."""
    cols = []
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        if pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        elif name == "bucket" and pa.types.is_integer(t):  # chdb sends DateTime as uint32 seconds
            col = pa.compute.multiply(col.cast(pa.int64()), 1_000_000)
        elif name == "side" and pa.types.is_integer(t):  # chdb sends Enum8 as its int8 code
            col = pa.array(np.array(["", "buy", "sell"])[col.to_numpy()])
        elif pa.types.is_date(t):
            col = col.cast(pa.date32()).cast(pa.int32())
        elif pa.types.is_dictionary(t):
            col = col.cast(pa.string())
        vals = col.to_pylist()
        if name in approx:
            vals = [float(v) for v in vals]
        elif pa.types.is_decimal(t):
            vals = [v.normalize() for v in vals]
        cols.append(vals)
    return list(zip(*cols))


def compare(a: pa.Table, b: pa.Table, approx: set[str]) -> tuple[bool, str]:
    ra, rb = canon(a, approx), canon(b, approx)
    if len(ra) != len(rb):
        return False, f"rows {len(ra)} != {len(rb)}"
    names = a.column_names
    for x, y in zip(ra, rb):
        for n, u, v in zip(names, x, y):
            if n in approx:
                if abs(u - v) > 1e-12 * max(abs(u), abs(v), 1e-300):
                    return False, f"{n}: {u} != {v} in {x}"
            elif u != v:
                return False, f"{n}: {u!r} != {v!r} in {x}"
    return True, f"{len(ra)} rows match"


def timed(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    gc.collect()
    gc.disable()
    try:
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out
    finally:
        gc.enable()


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return dict(p50=float(np.percentile(a, 50)), p99=float(np.percentile(a, 99)), min=float(a.min()),
                max=float(a.max()), n=len(a))


def fmt(s: dict) -> str:
    if s["n"] >= 30:
        return f"{s['p50']:8.1f} / {s['p99']:8.1f}"
    return f"{s['p50']:8.1f} / [{s['min']:.0f}-{s['max']:.0f}]"


def duck_connect(root: Path, threads: int | None):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {threads}")
    con.execute(f"CREATE VIEW trades AS SELECT * FROM read_parquet('{root / 'parquet'}/*.parquet')")
    return con


def duck_arrow(con, sql: str) -> pa.Table:
    rel = con.sql(sql)
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()


# ----------------------------------------------------------------------------- levers for Q3 (on a copy)


PHASES = [
    ("QueryParseMicroseconds", "parse"),
    ("QueryAnalysisMicroseconds", "analysis"),
    ("QueryPlanBuildMicroseconds", "plan"),
    ("QueryPlanOptimizeMicroseconds", "optimize"),
    ("QueryPipelineBuildMicroseconds", "pipeline"),
    ("QueryTimeMicroseconds", "query"),
]
PHASE_BLOCK = 10


def q1_phases(store, q1: str, runs: int) -> dict[str, dict[str, float]]:
    """Where Q1's time goes, as served (views inlined by the analyzer, K2's session setting) and with the view
    planned apart (``analyzer_inline_views = 0``, ClickHouse's default). ``query`` is the engine's whole time for
    the statement; the rest of ``wall`` is the embedded engine's hand-off and the Arrow result."""
    names = ", ".join(f"'{e}'" for e, _ in PHASES)
    snap_sql = f"SELECT event, value FROM system.events WHERE event IN ({names})"

    def snap() -> dict[str, int]:
        t = store.query_arrow(snap_sql).to_pydict()
        return dict(zip(t["event"], t["value"]))

    def block(sql: str | None) -> dict[str, float]:
        e0 = snap()
        tick = time.perf_counter()
        for _ in range(PHASE_BLOCK if sql else 0):
            store.query_arrow(sql)
        wall = (time.perf_counter() - tick) * 1e3
        e1 = snap()
        return {"wall": wall, **{label: (e1.get(e, 0) - e0.get(e, 0)) / 1e3 for e, label in PHASES}}

    ways = {"as served (views inlined)": q1, "view planned apart": q1 + " SETTINGS analyzer_inline_views = 0"}
    for sql in ways.values():
        for _ in range(3):
            store.query_arrow(sql)
    got: dict[str, list[dict[str, float]]] = {k: [] for k in ways}
    empty: list[dict[str, float]] = []
    for i in range(max(3, runs // PHASE_BLOCK)):
        for name in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
            got[name].append(block(ways[name]))
        empty.append(block(None))  # what the two snapshots themselves add to a block
    cols = ["wall"] + [label for _, label in PHASES]
    base = {c: statistics.median(b[c] for b in empty) for c in cols}
    return {
        name: {c: (statistics.median(b[c] for b in blocks) - base[c]) / PHASE_BLOCK for c in cols}
        for name, blocks in got.items()
    }


def levers(args, root: Path) -> list[tuple[str, str]]:
    """Ways to bring Q3 under target, measured on a copy of the store (the cached store is never altered)."""
    from k2.hot.chdb_store import ChdbStore

    copy = WORK / f"{root.name}-levers"
    if copy.exists():
        shutil.rmtree(copy)
    tick = time.perf_counter()
    shutil.copytree(root / "hot", copy / "hot", symlinks=True)
    out: list[tuple[str, str]] = [("copy store", f"{time.perf_counter() - tick:.1f} s")]
    runs = args.big_runs

    def q(store, sql, n=runs):
        s = stats(timed(lambda: store.query_arrow(sql), n, 1))
        return f"p50 {s['p50']:7.1f} ms  [{s['min']:.0f}-{s['max']:.0f}]"

    store = ChdbStore(copy)
    try:
        base = store.query_arrow(Q3_K2)
        out.append(("Q3 as in the table (Decimal256 product)", q(store, Q3_K2)))
        for mt in (1, 2):
            out.append((f"  SETTINGS max_threads = {mt}", q(store, Q3_K2 + f" SETTINGS max_threads = {mt}")))
        f64 = Q3_K2.replace("sum(CAST(price AS Decimal(76, 18)) * qty)", "sum(toFloat64(price) * toFloat64(qty))")
        out.append(("  Float64 product instead of Decimal256", q(store, f64)))
        scan = "SELECT exchange, symbol, toDate(ts) AS d, sum(qty), count() FROM trades GROUP BY exchange, symbol, d"
        out.append(("  volume only (no price*qty)", q(store, scan)))
        out.append(("  count() by exchange, symbol, day (ts only)",
                    q(store, "SELECT exchange, symbol, toDate(ts) AS d, count() FROM trades GROUP BY ALL")))
        # the 1d candles already hold sum(qty) and sum(price*qty) per pair and day
        d1 = ("SELECT exchange, symbol, toDate(bucket) AS d, volume, quote_volume / volume AS vwap, trade_count AS "
              "trades FROM ohlcv_1d ORDER BY exchange, symbol, d")
        ok, why = compare(base, store.query_arrow(d1), {"vwap"})
        out.append(("ohlcv_1d instead of trades", q(store, d1, args.runs) + f"  ({why})"))

        # Q1: where the time goes, and a finer index granularity of the 1m candle store
        class _A:
            start, days = args.start, args.days
            runs = big_runs = args.runs
        q1 = queries(_A)[0]["k2"]
        out.append(("Q1 through ohlcv_1m (this copy)", q(store, q1, args.runs)))
        out.append(("  EXPLAIN of Q1 only (planning, no read)", q(store, "EXPLAIN " + q1, args.runs)))
        out.append(("  SELECT 1", q(store, "SELECT 1", args.runs)))
        for g in (1024, 256):
            store.execute("DROP TABLE IF EXISTS exp_1m")
            store.execute("CREATE TABLE exp_1m AS ohlcv_1m_store ENGINE = AggregatingMergeTree PARTITION BY "
                          f"toYYYYMM(bucket) ORDER BY (exchange, symbol, bucket) SETTINGS index_granularity = {g}")
            store.execute("INSERT INTO exp_1m SELECT * FROM ohlcv_1m_store")
            view_sql = store.query_arrow("SELECT as_select AS s FROM system.tables WHERE database = currentDatabase() "
                                         "AND name = 'ohlcv_1m'")["s"][0].as_py()
            store.execute("DROP VIEW IF EXISTS exp_ohlcv_1m")
            store.execute("CREATE VIEW exp_ohlcv_1m AS " + view_sql.replace("ohlcv_1m_store", "exp_1m"))
            q1g = q1.replace("FROM ohlcv_1m", "FROM exp_ohlcv_1m")
            ok, why = compare(store.query_arrow(q1), store.query_arrow(q1g), set())
            out.append((f"  same view over a 1m store with index_granularity {g}",
                        q(store, q1g, args.runs) + f"  ({why})"))
        store.execute("DROP VIEW IF EXISTS exp_ohlcv_1m")
        store.execute("DROP TABLE IF EXISTS exp_1m")

        # narrower / cheaper columns: a side table with the same rows
        for label, ptype, codec in (
            ("Decimal(38,18) LZ4", "Decimal(38, 18)", "LZ4"),
            ("Decimal(18,8) ZSTD(1)", "Decimal(18, 8)", "ZSTD(1)"),
            ("Float64 ZSTD(1)", "Float64", "ZSTD(1)"),
        ):
            store.execute("DROP TABLE IF EXISTS exp_narrow")
            store.execute(f"""CREATE TABLE exp_narrow (exchange LowCardinality(String), symbol LowCardinality(String),
                trade_id UInt64 CODEC(Delta, ZSTD(1)), price {ptype} CODEC({codec}), qty {ptype} CODEC({codec}),
                ts DateTime64(6, 'UTC') CODEC(Delta, {codec})) ENGINE = MergeTree
                PARTITION BY toYYYYMM(ts) ORDER BY (exchange, symbol, trade_id)""")
            tick = time.perf_counter()
            store.execute("INSERT INTO exp_narrow SELECT exchange, symbol, trade_id, price, qty, ts FROM trades_store")
            store.execute("OPTIMIZE TABLE exp_narrow FINAL")
            fill = time.perf_counter() - tick
            prod = ("sum(toFloat64(price) * toFloat64(qty))" if ptype != "Float64" else "sum(price * qty)")
            if ptype.startswith("Decimal(18"):
                prod = "sum(CAST(price AS Decimal(38, 8)) * qty)"  # Decimal128(8) x Decimal64(8) -> scale 16, exact
            sql = (f"SELECT exchange, symbol, toDate(ts) AS d, sum(qty) AS volume, {prod} / sum(qty) AS vwap, "
                   "count() AS trades FROM exp_narrow GROUP BY exchange, symbol, d ORDER BY exchange, symbol, d")
            sz = store.query_arrow("SELECT sum(data_compressed_bytes) AS b FROM system.columns WHERE "
                                   "database = currentDatabase() AND table = 'exp_narrow' "
                                   "AND name IN ('price', 'qty', 'ts')")
            mb = sz["b"][0].as_py() / 1e6
            ok, why = compare(base, store.query_arrow(sql), {"vwap", "volume"} if ptype == "Float64" else {"vwap"})
            out.append((f"side table {label} (price, qty, ts {mb:.0f} MB)",
                        q(store, sql) + f"  ({why}; fill {fill:.0f} s)"))
        store.execute("DROP TABLE IF EXISTS exp_narrow")
        cur = store.query_arrow("SELECT sum(data_compressed_bytes) AS b FROM system.columns WHERE "
                                "database = currentDatabase() AND table = 'trades_store' "
                                "AND name IN ('price', 'qty', 'ts')")
        out.append(("trades_store price, qty, ts compressed", f"{cur['b'][0].as_py() / 1e6:.0f} MB"))

        out.append(("insert 1M rows (dedup + candle views), no projection", insert_probe(store, args, 1)))
        # projection with the daily aggregates, queried through the unchanged `trades` view
        tick = time.perf_counter()
        store.execute("""ALTER TABLE trades_store ADD PROJECTION IF NOT EXISTS p_daily (
            SELECT exchange, symbol, toDate(ts), sum(qty), sum(CAST(price AS Decimal(76, 18)) * qty), count()
            GROUP BY exchange, symbol, toDate(ts))""")
        store.execute("ALTER TABLE trades_store MATERIALIZE PROJECTION p_daily SETTINGS mutations_sync = 1")
        out.append(("PROJECTION p_daily: add + materialize", f"{time.perf_counter() - tick:.1f} s"))
        base = store.query_arrow(Q3_K2 + " SETTINGS optimize_use_projections = 0")  # same rows, from the columns
        forced = Q3_K2 + " SETTINGS force_optimize_projection = 1"
        try:
            got = store.query_arrow(forced)
            ok, why = compare(base, got, {"vwap"})
            out.append(("  Q3 through `trades`, projection forced", q(store, forced, args.runs) + f"  ({why})"))
        except Exception as exc:  # noqa: BLE001
            out.append(("  Q3 through `trades`, projection forced", f"REFUSED: {str(exc)[:160]}"))
        out.append(("  Q3 through `trades`, default settings", q(store, Q3_K2, args.runs)))
        # a filtered variant (one pair, one week) also served by the projection?
        week = ("SELECT toDate(ts) AS d, sum(qty) AS volume, sum(CAST(price AS Decimal(76, 18)) * qty) / sum(qty) AS "
                "vwap FROM trades WHERE exchange = 'kraken' AND symbol = 'ETH-USD' AND toDate(ts) >= toDate('"
                f"{args.start}') + 7 AND toDate(ts) < toDate('{args.start}') + 14 GROUP BY d ORDER BY d")
        try:
            store.query_arrow(week + " SETTINGS force_optimize_projection = 1")
            out.append(("  1 pair, 1 week, filtered on toDate(ts), forced", q(store, week, args.runs)))
        except Exception as exc:  # noqa: BLE001
            out.append(("  1 pair, 1 week, filtered on toDate(ts), forced", f"REFUSED: {str(exc)[:120]}"))
        # a view column carrying the exact product, so users need not know the cast (and the projection matches it)
        store.execute("DROP VIEW IF EXISTS exp_trades_v")
        store.execute("CREATE VIEW exp_trades_v AS SELECT exchange, symbol, trade_id, price, qty, side, ts, ts_recv, "
                      "CAST(price AS Decimal(76, 18)) * qty AS quote_qty FROM trades_store")
        nq = ("SELECT exchange, symbol, toDate(ts) AS d, sum(qty) AS volume, sum(quote_qty) / sum(qty) AS vwap, "
              "count() AS trades FROM exp_trades_v GROUP BY exchange, symbol, d ORDER BY exchange, symbol, d")
        try:
            ok, why = compare(base, store.query_arrow(nq + " SETTINGS force_optimize_projection = 1"), {"vwap"})
            out.append(("  view column quote_qty = CAST(price AS Decimal(76,18))*qty, sum(quote_qty)",
                        q(store, nq, args.runs) + f"  ({why})"))
        except Exception as exc:  # noqa: BLE001
            out.append(("  view column quote_qty, sum(quote_qty), forced", f"REFUSED: {str(exc)[:120]}"))
        store.execute("DROP VIEW IF EXISTS exp_trades_v")
        f64_forced = f64 + " SETTINGS force_optimize_projection = 1"
        try:
            store.query_arrow(f64_forced)
            out.append(("  Float64 variant of Q3 uses it", "yes"))
        except Exception:  # noqa: BLE001
            out.append(("  Float64 variant of Q3 uses it", "no (different aggregate -> full scan)"))
        # insert cost with the projection: one extra day of trades (copy only)
        out.append(("  insert 1M rows, with projection", insert_probe(store, args, 2)))
        out.append(("  parts after insert", json.dumps(parts_summary(store))))
    finally:
        store.close()
    if not args.keep_copy:
        shutil.rmtree(copy, ignore_errors=True)
    return out


def insert_probe(store, args, k: int) -> str:
    """Insert one more day (the k-th after the data set, 1M rows) through insert_trades; a copy only."""
    specs = pair_specs()
    weights = [s["weight"] for s in specs]
    t0 = int(datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)
    t0 += (args.days + k - 1) * DAY_US
    counts = allocate(1_000_000, weights)
    pairs = [generate_pair(s, int(c), t0, t0 + DAY_US, args.seed + k, i) for i, (s, c) in enumerate(zip(specs, counts))]
    for s, n, c in zip(specs, allocate(args.trades, weights), counts):  # ids continue after the stored ones
        s["tid0"] += int(n) + (k - 1) * int(c)
    table = day_table(specs, pairs, [(0, len(p["ts"])) for p in pairs])
    tick = time.perf_counter()
    res = store.insert_trades(table)
    assert res.inserted == table.num_rows, res
    return f"{(time.perf_counter() - tick) * 1000:.0f} ms ({table.num_rows:,} rows)"


# ----------------------------------------------------------------------------- main


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=33_000_000, help="trades in the store (default 33,000,000)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--start", default="2026-06-15", help="first UTC day")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1_000_000, help="rows per insert_trades call (approx.)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs of Q1/Q2 (>= 30)")
    ap.add_argument("--big-runs", type=int, default=7, help="timed runs of Q3 (>= 5)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--duckdb-threads", type=int, default=0, help="0 = DuckDB default (all cores)")
    ap.add_argument("--rebuild", action="store_true", help="regenerate even if cached")
    ap.add_argument("--levers", action="store_true", help="also measure Q3 levers on a copy of the store")
    ap.add_argument("--keep-copy", action="store_true", help="keep the levers copy for inspection")
    args = ap.parse_args(argv)

    from k2.hot.chdb_store import ChdbStore

    t_all = time.perf_counter()
    key = f"trades{args.trades}_days{args.days}_{args.start}_seed{args.seed}_ddl{ddl_hash()}"
    root = WORK / key
    if args.rebuild or not (root / "manifest.json").exists():
        print(f"building {root} ...", flush=True)
        manifest = build(args, root)
        cached = False
    else:
        manifest = json.loads((root / "manifest.json").read_text())
        cached = True

    store = ChdbStore(root)
    con = duck_connect(root, args.duckdb_threads)
    rows = store.query_arrow("SELECT count() AS n FROM trades")["n"][0].as_py()
    duck_rows = con.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    pairs = store.query_arrow("SELECT uniqExact(exchange, symbol) AS p, min(ts) AS a, max(ts) AS b FROM trades")
    parts = parts_summary(store)

    load0 = os.getloadavg()[0]
    results = []
    for qd in queries(args):
        k2_res = store.query_arrow(qd["k2"])
        dk_res = duck_arrow(con, qd["duck"])
        ok, why = compare(k2_res, dk_res, qd["approx"])
        k2_ms = stats(timed(lambda: store.query_arrow(qd["k2"]), qd["runs"], args.warmup))
        dk_ms = stats(timed(lambda: duck_arrow(con, qd["duck"]), qd["runs"], args.warmup))
        results.append((qd, k2_ms, dk_ms, ok, why))
        print(f"  {qd['name']}: K2 p50 {k2_ms['p50']:.1f} ms, DuckDB p50 {dk_ms['p50']:.1f} ms, {why}", flush=True)
    phases = q1_phases(store, queries(args)[0]["k2"], args.runs)
    store.close()
    con.close()

    lever_rows = levers(args, root) if args.levers else []

    print()
    cmd = ["python", os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])
    print(f"command : {shlex.join(cmd)}")
    print(f"machine : {cpu_model()}, {os.cpu_count()} logical cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
          f"python {platform.python_version()}, chdb {version('chdb')}, duckdb {version('duckdb')}, "
          f"pyarrow {pa.__version__}")
    print(f"store   : {rows:,} trades (DuckDB/Parquet: {duck_rows:,}), {pairs['p'][0].as_py()} pairs, "
          f"{pairs['a'][0].as_py():%Y-%m-%d %H:%M} .. {pairs['b'][0].as_py():%Y-%m-%d %H:%M} UTC; "
          f"chdb {manifest['store_bytes'] / 1e9:.2f} GB on disk, Parquet {manifest['parquet_bytes'] / 1e9:.2f} GB")
    print(f"parts   : {json.dumps(parts)}")
    print(f"load    : 1-min load average {load0:.2f} before the timed queries, {os.getloadavg()[0]:.2f} at the end "
          f"({os.cpu_count()} cores; other processes on the machine add noise)")
    print(f"build   : {'cached, ' if cached else ''}numpy {manifest['numpy_s']} s + arrow {manifest['arrow_s']} s "
          f"generation; insert_trades {manifest['insert_s']} s ({manifest['inserts']} inserts, "
          f"{manifest['trades'] / max(manifest['insert_s'], 1e-9) / 1e6:.2f}M rows/s incl. dedup + candle views); "
          f"parquet {manifest['parquet_s']} s; merge wait {manifest['merge_wait_s']} s")
    print("timing  : ms, wall clock SQL -> pyarrow Table; p50 / p99 (>= 30 runs) or p50 / [min-max] (fewer runs)")
    print()
    w = max(len(r[0]["name"]) for r in results)
    head = f"{'query':<{w}} | {'K2 p50 / p99':>19} | {'DuckDB p50 / p99':>19} | {'runs':>4} | target   | K2   | results"
    print(head)
    print("-" * len(head))
    for qd, k, d, ok, why in results:
        status = "PASS" if k["p50"] < qd["target_ms"] else "FAIL"
        print(f"{qd['name']:<{w}} | {fmt(k):>19} | {fmt(d):>19} | {k['n']:>4} | <{qd['target_ms']:>4} ms | {status} | "
              f"{'MATCH' if ok else 'MISMATCH'} ({why})")
    print()
    print("Q1 by phase: ClickHouse's own counters (system.events) per query, ms, median of blocks of "
          f"{PHASE_BLOCK} queries; the two ways alternate block by block on the same store")
    cols = list(next(iter(phases.values())))
    print(f"{'':<34}" + "".join(f"{c:>10}" for c in cols))
    for name, row in phases.items():
        print(f"{name:<34}" + "".join(f"{row[c]:>10.2f}" for c in cols))
    if lever_rows:
        print()
        print("Levers (on a copy of the store; queries written against the public views unless noted):")
        lw = max(len(a) for a, _ in lever_rows)
        for a, b in lever_rows:
            print(f"  {a:<{lw}}  {b}")
    print(f"\nwall time {time.perf_counter() - t_all:.1f} s")
    return 0 if all(r[3] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
