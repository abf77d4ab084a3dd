"""API latency under load while `k2 up --simulate` ingests: candles for 50 clients, stream fan-out to 100.

    python benchmarks/bench_api.py                         # 3 runs of each phase, ~5 minutes
    python benchmarks/bench_api.py --runs 5 --seconds 30

What runs (all on 127.0.0.1, the load generator in this process, K2 in a child process):
1. A day of history: a synthetic capture of the 34 default pairs over the 24 h before now (``--history``
   trades), replayed with `k2 replay`, so a day of 1m candles exists for every pair.
2. `k2 up --simulate --sim-rate R --port P` on that data dir: the real platform (feeds, bus, writer, candle
   views, API) ingesting from the local simulator at ``--ingest`` trades/s in all (R per exchange). The
   ingest rate actually achieved is measured from /v1/status and printed.
3. Candles: ``--clients`` (50) concurrent clients, each asking `GET /v1/ohlcv/1m` for the last day of
   binance BTC-USDT, with ``--think-ms`` between its requests (default 200 ms: 50 dashboards refreshing 5 times
   a second, 250 requests/s offered), for ``--seconds``. Then the same with no think time (closed loop: the
   most the server can do; latency there is queueing). Every answer is checked (200, and at least the candles
   a first request saw).
4. Stream: ``--subscribers`` (100) WebSocket clients, client i subscribed to the trades and 1m candles of
   pair i mod 34; the delay of every trade message is receive time minus the time the hub got the stored
   batch (``stored``: fan-out delay, the figure), and receive time minus the trade's ``ts_recv`` (end to end
   from the exchange frame's arrival, which includes the feed flush and the writer's batching) is printed too.
Figures are medians over ``--runs`` runs of each run's percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _machine import cpu_model

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def prepare_history(data: Path, trades: int) -> float:
    from k2.capture.synth import write_synthetic_capture

    cap = data.parent / "history.jsonl.zst"
    now_us = time.time_ns() // 1000
    # the generator's exchange time runs ~0.75x its nominal rate: ask for a span of ~26 h ending before now
    start = now_us - 26 * 3600 * 1_000_000
    rate = trades * 0.75 / (26 * 3600)
    # ids below the simulator's (it starts every pair at the same base): the live feed then continues above
    write_synthetic_capture(cap, trades, seed=3, start_us=start, rate=rate, id_offset=-1_000_000)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "k2", "replay", str(cap), "--data-dir", str(data)], check=True,
                   stdout=subprocess.DEVNULL)
    cap.unlink()
    return time.perf_counter() - t0


async def wait_ready(base: str, proc, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"k2 up exited with {proc.returncode}")
            try:
                async with s.get(base + "/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("k2 up did not become ready")


async def stored_count(s: aiohttp.ClientSession, base: str) -> int:
    async with s.get(base + "/v1/status") as r:
        body = await r.json()
    return body["writer"]["trades_stored"]


async def stored_now(base: str) -> int:
    async with aiohttp.ClientSession() as s:
        return await stored_count(s, base)


async def candles_now(base: str) -> int:
    end = time.time_ns() // 1000
    params = {"exchange": "binance", "symbol": "BTC-USDT", "start": str(end - 86_400_000_000), "end": str(end)}
    async with aiohttp.ClientSession() as s, s.get(base + "/v1/ohlcv/1m", params=params) as r:
        return len((await r.json())["candles"])


async def candle_load(base: str, clients: int, seconds: float, think_s: float, min_candles: int) -> dict:
    lat: list[float] = []
    errors = 0
    bad = 0
    stop_at = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=clients + 10)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors, bad
        await asyncio.sleep(think_s * i / clients)  # spread the clients' phases
        while time.monotonic() < stop_at:
            end = time.time_ns() // 1000
            params = {"exchange": "binance", "symbol": "BTC-USDT", "start": str(end - 86_400_000_000), "end": str(end)}
            t0 = time.perf_counter()
            try:
                async with session.get(base + "/v1/ohlcv/1m", params=params) as r:
                    body = await r.read()
                    dt = time.perf_counter() - t0
                    if r.status != 200:
                        errors += 1
                    else:
                        n = body.count(b'"bucket"')
                        if n < min_candles - 2:  # the day's window slides: a minute may have no trade yet
                            bad += 1
                        lat.append(dt)
            except aiohttp.ClientError:
                errors += 1
            if think_s:
                await asyncio.sleep(think_s)

    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.monotonic()
        await asyncio.gather(*(one(session, i) for i in range(clients)))
        wall = time.monotonic() - t0
    return {"p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000, "n": len(lat), "rps": len(lat) / wall,
            "errors": errors, "short": bad}


async def stream_load(base: str, subscribers: int, seconds: float, pairs: list[str]) -> dict:
    fan: list[float] = []
    e2e: list[float] = []
    msgs = 0
    dropped = 0
    ws_base = base.replace("http://", "ws://")
    stop_at = time.monotonic() + seconds

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal msgs, dropped
        pair = pairs[i % len(pairs)]
        async with session.ws_connect(f"{ws_base}/v1/stream?symbols={pair}&channels=trades,candles&timeframes=1m",
                                      max_msg_size=0) as ws:
            while time.monotonic() < stop_at:
                try:
                    m = await ws.receive(timeout=max(0.05, stop_at - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                now = time.time_ns() // 1000
                if m.type != aiohttp.WSMsgType.TEXT:
                    if m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        dropped += 1
                        return
                    continue
                body = json.loads(m.data)
                if body.get("type") == "trades":
                    msgs += 1
                    fan.append((now - body["stored"]) / 1000)
                    e2e.extend((now - t["ts_recv"]) / 1000 for t in body["data"])

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i) for i in range(subscribers)))
    return {"p50": pct(fan, 50), "p99": pct(fan, 99), "max": max(fan, default=float("nan")), "messages": msgs,
            "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99), "dropped": dropped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--think-ms", type=float, default=200.0)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--ingest", type=float, default=5000.0, help="trades/s the simulator produces in all")
    ap.add_argument("--history", type=int, default=2_000_000, help="trades of the prefilled day")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="k2-bench-api-"))
    data = work / "data"
    proc = None
    try:
        print(f"prefilling a day of history ({args.history:,} trades) ...", file=sys.stderr)
        replay_s = prepare_history(data, args.history)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, K2_FEEDS__BACKFILL_MAX_TRADES="1000")  # the prefilled ids leave one gap per pair
        log = open(work / "k2-up.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "k2", "up", "--simulate", "--sim-rate", str(args.ingest / 3), "--port", str(port),
             "--data-dir", str(data), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        asyncio.run(wait_ready(base, proc))
        time.sleep(5)  # connections up, start-up backfill done
        from k2.model import InstrumentTable

        pairs = [f"{i.exchange}:{i.symbol}" for i in InstrumentTable.default()]
        candles = asyncio.run(candles_now(base))
        paced, closed, streams, rates = [], [], [], []
        # the load generator's own collector pauses would show up as server latency: none while measuring
        gc.collect()
        gc.freeze()
        gc.disable()
        for run in range(args.runs):
            stored0, t0 = asyncio.run(stored_now(base)), time.monotonic()
            paced.append(asyncio.run(candle_load(base, args.clients, args.seconds, args.think_ms / 1000, candles)))
            closed.append(asyncio.run(candle_load(base, args.clients, args.seconds / 2, 0.0, candles)))
            streams.append(asyncio.run(stream_load(base, args.subscribers, args.seconds, pairs)))
            rates.append((asyncio.run(stored_now(base)) - stored0) / (time.monotonic() - t0))
            gc.collect()
            print(f"run {run + 1}: ingest {rates[-1]:,.0f}/s; paced {paced[-1]}; closed {closed[-1]}; "
                  f"stream {streams[-1]}", file=sys.stderr)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    rng = lambda xs: f"{min(xs):.1f}-{max(xs):.1f}"  # noqa: E731
    print(f"\nK2 API under ingestion — {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, {cpu_model()}")
    print(f"history: {args.history:,} trades over ~26 h replayed in {replay_s:.0f} s; trades stored per second "
          f"while measuring (whole runs): median {med(rates):,.0f} (target {args.ingest:,.0f}; runs {', '.join(f'{r:,.0f}' for r in rates)})")
    print(f"{args.runs} runs of {args.seconds:g} s; a day of binance BTC-USDT is {candles} 1m candles\n")
    print("| figure | median | range | target |")
    print("|---|---:|---:|---:|")
    p50 = [r["p50"] for r in paced]
    p99 = [r["p99"] for r in paced]
    print(f"| GET /v1/ohlcv/1m (a day of one symbol), {args.clients} clients, {args.think_ms:g} ms think time: p50 ms "
          f"| {med(p50):.1f} | {rng(p50)} | < 15 |")
    print(f"| same, p99 ms | {med(p99):.1f} | {rng(p99)} | < 50 |")
    print(f"| same, requests/s answered | {med([r['rps'] for r in paced]):.0f} | | |")
    c50 = [r["p50"] for r in closed]
    c99 = [r["p99"] for r in closed]
    print(f"| same, closed loop (no think time): p50 ms | {med(c50):.1f} | {rng(c50)} | |")
    print(f"| closed loop p99 ms | {med(c99):.1f} | {rng(c99)} | |")
    print(f"| closed loop requests/s | {med([r['rps'] for r in closed]):.0f} | | |")
    s99 = [r["p99"] for r in streams]
    s50 = [r["p50"] for r in streams]
    print(f"| /v1/stream fan-out delay to {args.subscribers} clients, p50 ms | {med(s50):.1f} | {rng(s50)} | |")
    print(f"| /v1/stream fan-out delay, p99 ms | {med(s99):.1f} | {rng(s99)} | < 100 |")
    print(f"| /v1/stream delay from frame receipt (ts_recv), p50 / p99 ms | {med([r['e2e_p50'] for r in streams]):.0f} / "
          f"{med([r['e2e_p99'] for r in streams]):.0f} | | |")
    errs = sum(r["errors"] + r["short"] for r in paced + closed)
    print(f"\nerrors or short answers: {errs}; stream messages: {sum(r['messages'] for r in streams):,}; "
          f"stream clients dropped: {sum(r['dropped'] for r in streams)}")


if __name__ == "__main__":
    main()
