#!/usr/bin/env python
"""Parse + normalize throughput (trades/s) per exchange on one core: K2 side by side with cryptofeed 2.4.1.

    pip install -e '.[bench]'
    python benchmarks/bench_parse.py [--trades N] [--runs K] [--batch B] [--exchanges binance,kraken,coinbase]

Frames are synthetic but realistic (see ``benchmarks/frames.py``) and generated before timing. Only parsing is timed:

* K2: ``make_parser(exchange, InstrumentTable.default()).parse(frames, ts_recv)`` on batches of ``--batch`` str
  frames, the way the pipeline calls it; output is a pyarrow table with exact decimal128 prices.
* cryptofeed: the feed's own ``message_handler`` coroutine called once per frame (what its websocket loop does),
  with symbol maps pre-populated offline through the feed's own ``_parse_symbol_data`` and a TRADES callback
  that only counts. cryptofeed speaks Binance ``aggTrade`` (combined stream) and Kraken WS v1, so it gets those
  formats carrying the same trades (same trades per frame); Coinbase Advanced frames are identical for both.

Every run checks the trade count (and no K2 dead letters); one untimed pass checks every K2 row field by field
against the generated tape, and cryptofeed's first trades are spot-checked the same way.
"""

from __future__ import annotations

import os

# Pin before anything starts threads (numpy/pyarrow pools inherit the mask from the thread that creates them).
os.sched_setaffinity(0, {0})

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import glob  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from decimal import Decimal  # noqa: E402
from importlib import metadata  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frames as F  # noqa: E402
from _machine import cpu_model  # noqa: E402

import pyarrow as pa  # noqa: E402

from k2.model import InstrumentTable  # noqa: E402
from k2.venues.registry import make_parser  # noqa: E402

UNIT = Decimal(F.UNIT)


# ----------------------------------------------------------------------------- environment


def unpinned_threads() -> list[str]:
    """Threads of this process whose CPU mask is not {0} (should be none)."""
    bad = []
    for status in glob.glob("/proc/self/task/*/status"):
        try:
            with open(status) as fh:
                for line in fh:
                    if line.startswith("Cpus_allowed_list:"):
                        if line.split(":", 1)[1].strip() != "0":
                            bad.append(f"{status.split('/')[4]}:{line.split(':', 1)[1].strip()}")
        except OSError:
            pass
    return bad


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ----------------------------------------------------------------------------- expected trades


def expected_rows(tape: F.Tape) -> dict[tuple[str, int], tuple]:
    """(canonical symbol, trade_id) -> (price, qty, taker side, ts µs as K2 must store it)."""
    out = {}
    for f in tape.fills:
        ts = f.ts_us // 1000 * 1000 if tape.venue == "binance" else f.ts_us  # Binance T is ms
        quote = "USDT" if tape.venue == "binance" else "USD"
        out[(f"{f.base}-{quote}", f.trade_id)] = (
            Decimal(f.price) / UNIT,
            Decimal(f.qty) / UNIT,
            "sell" if f.taker_sell else "buy",
            ts,
        )
    return out


def verify_k2_rows(tables: list[pa.Table], want: dict) -> None:
    """Every output row equals the generated trade exactly (ids, decimals, side, time); nothing missing or extra."""
    got = 0
    for t in tables:
        cols = [
            t.column("symbol").to_pylist(),
            t.column("trade_id").to_pylist(),
            t.column("price").to_pylist(),
            t.column("qty").to_pylist(),
            t.column("side").to_pylist(),
            t.column("ts").cast(pa.int64()).to_pylist(),
        ]
        for sym, tid, price, qty, side, ts in zip(*cols):
            exp = want.get((sym, tid))
            if exp is None:
                raise AssertionError(f"K2 produced an unexpected trade {sym} {tid}")
            if (price, qty, side, ts) != exp:
                raise AssertionError(f"K2 row {sym} {tid}: got {(price, qty, side, ts)}, expected {exp}")
            got += 1
    if got != len(want):
        raise AssertionError(f"K2 produced {got} rows, expected {len(want)}")


# ----------------------------------------------------------------------------- K2


def k2_runner(exchange: str, frames: list[str], recv: list[int], n_trades: int, want: dict, batch: int):
    """Verify K2 on these frames (untimed), then return a function doing one timed run -> (trades/s by CPU time, by wall time)."""
    parser = make_parser(exchange, InstrumentTable.default())
    batches = [(frames[i : i + batch], recv[i : i + batch]) for i in range(0, len(frames), batch)]
    # untimed correctness pass (also warms up caches and lazy imports)
    tables = []
    for fr, rc in batches:
        res = parser.parse(fr, rc)
        if res.dead:
            raise AssertionError(f"K2 {exchange}: {len(res.dead)} dead letters, first {res.dead[0]}")
        tables.append(res.trades)
    verify_k2_rows(tables, want)
    del tables

    def run_once() -> tuple[float, float]:
        gc.collect()
        n = dead = 0
        c0, t0 = time.process_time(), time.perf_counter()
        for fr, rc in batches:
            res = parser.parse(fr, rc)
            n += res.trades.num_rows
            dead += len(res.dead)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if n != n_trades or dead:
            raise AssertionError(f"K2 {exchange}: {n} trades (expected {n_trades}), {dead} dead letters")
        return n_trades / cpu, n_trades / wall

    return run_once


# ----------------------------------------------------------------------------- cryptofeed


def make_cryptofeed(exchange: str, callback):
    """A cryptofeed 2.4.1 feed for the benchmark symbols, built offline: the symbol cache is filled from
    synthetic REST bodies through the feed's own ``_parse_symbol_data``, so no request is made."""
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import Binance, Coinbase, Kraken
    from cryptofeed.symbols import Symbols

    cls, body = {
        "binance": (Binance, F.binance_exchange_info()),
        "kraken": (Kraken, F.kraken_asset_pairs()),
        "coinbase": (Coinbase, F.coinbase_products()),
    }[exchange]
    Symbols.set(cls.id, *cls._parse_symbol_data(body))
    quote = "USDT" if exchange == "binance" else "USD"
    symbols = [f"{b}-{quote}" for b in F.venue_bases(exchange)]
    return cls(symbols=symbols, channels=[TRADES], callbacks={TRADES: callback})


def cryptofeed_runner(exchange: str, frames: list[str], recv: list[float], n_trades: int, want: dict):
    """Spot-check cryptofeed on these frames (untimed), then return a function doing one timed run -> (trades/s by CPU time, by wall time)."""
    count = 0
    seen = []

    async def on_trade(trade, receipt_timestamp):  # minimal work: count
        nonlocal count
        count += 1

    async def on_trade_keep(trade, receipt_timestamp):
        seen.append(trade)

    async def drive(handler, frames, recv):
        for frame, ts in zip(frames, recv):
            await handler(frame, None, ts)

    loop = asyncio.new_event_loop()  # kept for the timed runs; the handler never really suspends
    # spot check: the first 2000 frames through a feed that keeps the Trade objects
    check = make_cryptofeed(exchange, on_trade_keep)
    loop.run_until_complete(drive(check.message_handler, frames[:2000], recv[:2000]))
    # every exchange delivers trades in tape order here: compare position by position
    for t, (key, exp) in zip(seen, want.items()):
        # Binance: t.id is the aggTrade id (own id space), the raw id is f; Kraken v1 carries no trade id
        tid = int(t.raw["f"]) if exchange == "binance" else int(t.id) if exchange == "coinbase" else key[1]
        side = exp[2]
        if exchange == "coinbase":  # cryptofeed reads Advanced `side` as the taker side, K2 as the maker side
            side = "buy" if side == "sell" else "sell"
        if (t.symbol, tid, t.price, t.amount, t.side) != (*key, *exp[:2], side):
            got = (t.symbol, tid, t.price, t.amount, t.side)
            raise AssertionError(f"cryptofeed {exchange}: {got} != {(*key, *exp[:2], side)}")
    if not seen:
        raise AssertionError(f"cryptofeed {exchange}: no trades delivered in the spot check")

    feed = make_cryptofeed(exchange, on_trade)
    handler = feed.message_handler

    def run_once() -> tuple[float, float]:
        nonlocal count
        gc.collect()
        count = 0
        c0, t0 = time.process_time(), time.perf_counter()
        loop.run_until_complete(drive(handler, frames, recv))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if count != n_trades:
            raise AssertionError(f"cryptofeed {exchange}: delivered {count} trades, expected {n_trades}")
        return n_trades / cpu, n_trades / wall

    return run_once


# ----------------------------------------------------------------------------- report


def fmt_rates(rates: list[float] | None) -> str:
    if not rates:
        return "n/a"
    return f"{statistics.median(rates):>11,.0f}  [{min(rates):,.0f} - {max(rates):,.0f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=300_000, help="trades generated per exchange (default 300000)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (default 5)")
    ap.add_argument("--batch", type=int, default=10_000, help="frames per K2 parse() call (default 10000)")
    ap.add_argument("--exchanges", default="binance,kraken,coinbase", help="comma-separated subset")
    ap.add_argument("--no-cryptofeed", action="store_true", help="measure K2 only")
    args = ap.parse_args(argv)
    exchanges = [e.strip() for e in args.exchanges.split(",") if e.strip()]

    cf_ok = not args.no_cryptofeed
    if cf_ok:
        try:
            import cryptofeed  # noqa: F401
        except ImportError as exc:
            print(f"cryptofeed not importable ({exc}); install the bench extra: pip install -e '.[bench]'")
            cf_ok = False

    print(f"command : {shlex.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine : {cpu_model()}, {os.cpu_count()} logical cores; pinned to CPU 0 "
          f"(affinity {sorted(os.sched_getaffinity(0))})")
    print(f"python  : {platform.python_version()} ({platform.python_implementation()}), "
          f"k2 {version('k2')}, msgspec {version('msgspec')}, pyarrow {pa.__version__}, numpy {version('numpy')}, "
          f"cryptofeed {version('cryptofeed')}, yapic.json {version('yapic.json')}")
    print(f"sizes   : {args.trades:,} trades per exchange, {args.runs} timed runs each, K2 batch {args.batch:,} frames")

    # Per exchange: build and verify every measurement (untimed), then time them round-robin, run after run,
    # so that background noise on the machine hits K2 and cryptofeed alike.
    rates: dict[str, list[float]] = {}  # trades/s by process CPU time (time stolen by other processes excluded)
    wall: dict[str, list[float]] = {}  # trades/s by wall-clock time
    rows = []  # [label, n_trades, n_frames, bytes/frame, k2 key, cf label, cf key]
    t_start = time.perf_counter()
    for ex in exchanges:
        tape = F.make_tape(ex, args.trades)
        want = expected_rows(tape)
        n = len(tape.fills)
        runners: dict[str, object] = {}

        def add_k2(key, label, fr, rc, cf_label="-", cf_key=None):
            runners[key] = k2_runner(ex, fr, rc, n, want, args.batch)
            rows.append([label, n, len(fr), sum(map(len, fr)) / len(fr), key, cf_label, cf_key])

        def add_cf(key, fr, rc):
            if cf_ok:
                runners[key] = cryptofeed_runner(ex, fr, rc, n, want)

        if ex == "binance":
            add_cf("cf-binance", *F.binance_aggtrade_frames(tape))
            cf = ("aggTrade, combined stream", "cf-binance")
            add_k2("k2-binance-mixed", "binance @trade, 50% raw + 50% combined", *F.binance_trade_frames(tape, "mixed"), *cf)
            add_k2("k2-binance-raw", "binance @trade, raw", *F.binance_trade_frames(tape, "raw"))
            add_k2("k2-binance-comb", "binance @trade, combined stream", *F.binance_trade_frames(tape, "combined"), *cf)
        elif ex == "kraken":
            add_k2("k2-kraken", "kraken v2 trade (1-3 trades/frame)", *F.kraken_v2_frames(tape),
                   "v1 trade, same trades/frame", "cf-kraken")
            add_cf("cf-kraken", *F.kraken_v1_frames(tape))
        elif ex == "coinbase":
            fr, rc, _ = F.coinbase_advanced_frames(tape)
            add_k2("k2-cb-adv", "coinbase advanced market_trades (1-10/frame)", fr, rc, "same frames", "cf-coinbase")
            add_cf("cf-coinbase", fr, [r / 1e6 for r in rc])
            add_k2("k2-cb-match", "coinbase exchange match", *F.coinbase_match_frames(tape), "- (no Exchange-feed class)")
            del fr, rc
        else:
            raise SystemExit(f"unknown exchange {ex!r}")
        del tape
        print(f"  {ex}: frames built and verified, timing {len(runners)} measurements x {args.runs} runs ...",
              file=sys.stderr, flush=True)
        for _ in range(args.runs):
            for key, run_once in runners.items():
                cpu_rate, wall_rate = run_once()
                rates.setdefault(key, []).append(cpu_rate)
                wall.setdefault(key, []).append(wall_rate)
        runners.clear()
        gc.collect()

    bad = unpinned_threads()
    if bad:
        print(f"WARNING: threads not pinned to CPU 0: {bad}")
    def table(title: str, data: dict[str, list[float]]) -> None:
        print(f"\n{title}")
        w = max(len(r[0]) for r in rows)
        wc = max(len(r[5]) for r in rows)
        head = (f"{'exchange / format':<{w}} | {'trades':>8} | {'frames':>8} | {'B/frame':>7} | {'K2 trades/s':<37} | "
                f"{'cryptofeed input':<{wc}} | {'cryptofeed 2.4.1 trades/s':<33} | {'K2/cf':>6}")
        print(head)
        print("-" * len(head))
        for label, n, nf, bpf, k2_key, cf_label, cf_key in rows:
            k2, cfr = data[k2_key], data.get(cf_key)
            ratio = f"{statistics.median(k2) / statistics.median(cfr):5.1f}x" if cfr else "     -"
            print(f"{label:<{w}} | {n:>8,} | {nf:>8,} | {bpf:>7.0f} | {fmt_rates(k2):<37} | {cf_label:<{wc}} | "
                  f"{fmt_rates(cfr):<33} | {ratio}")

    print("\ntrades/s = median of runs [min - max]; K2/cf = K2 median / cryptofeed median. Trade counts verified on "
          "every run (K2: 0 dead letters; all K2 rows checked field by field, cryptofeed's first trades spot-checked).")
    table("By process CPU time (one core; excludes time other processes held the core):", rates)
    table("By wall-clock time:", wall)
    print(f"\nwall time {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
