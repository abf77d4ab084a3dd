"""End-to-end `k2 replay` throughput and peak RSS on a generated capture.

    python benchmarks/bench_replay.py                 # 10M trades across the 34 default pairs, 3 runs per mode
    python benchmarks/bench_replay.py --trades 1000000 --runs 2
    python benchmarks/bench_replay.py --modes raw --baseline-src /tmp/k2-old/src   # alternate with another tree

With --baseline-src, every run of this tree is followed by a run of the k2 package under that source directory
(e.g. a `git worktree` of an older commit, C extension built in place), so both are measured in the same minutes:
this machine's speed moves by tens of percent within minutes.

Each run is the real command (`k2 replay FILE --data-dir FRESH_DIR`) in a child process, so the figure includes
start-up, capture decompression and parsing, the bus, the hot writer, deduplication, the raw layer (unless
--no-raw) and the candle materialized views. After each run the store is checked: every trade stored once and
the 1m and 1d candles count every trade. Peak RSS is the child's own (wait4). The capture is generated once
and cached in benchmarks/.work/ (gitignored).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"


def capture(trades: int, seed: int) -> Path:
    path = WORK / f"replay-{trades // 1_000_000}m.jsonl.zst" if trades % 1_000_000 == 0 else WORK / f"replay-{trades}.jsonl.zst"
    if not path.exists():
        from k2.capture.synth import write_synthetic_capture

        WORK.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tmp = path.with_suffix(".tmp.zst")
        write_synthetic_capture(tmp, trades, seed=seed)
        tmp.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def one_run(path: Path, trades: int, no_raw: bool, src: str | None = None) -> tuple[float, float, float]:
    data = Path(tempfile.mkdtemp(prefix="k2-bench-replay-"))
    env = dict(os.environ, PYTHONPATH=src) if src else None
    try:
        cmd = [sys.executable, "-m", "k2", "replay", str(path), "--data-dir", str(data)] + (["--no-raw"] if no_raw else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out = proc.stdout.read().decode()
        err = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"replay failed:\n{out}\n{err}")
        stored = int(next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("trades stored")))
        check = subprocess.run(
            [sys.executable, "-m", "k2", "sql", "--format", "csv", "--data-dir", str(data),
             "SELECT (SELECT count() FROM trades), (SELECT uniqExact(exchange, symbol, trade_id) FROM trades), "
             "(SELECT sum(trade_count) FROM ohlcv_1m), (SELECT sum(trade_count) FROM ohlcv_1d)"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()[1].split(",")
        counts = [int(x) for x in check]
        if stored != trades or counts != [trades] * 4:
            raise SystemExit(f"store check failed: stored {stored}, counts {counts}, expected {trades}")
        return trades / wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--modes", default="raw,no-raw", help="raw (default pipeline) and/or no-raw")
    ap.add_argument("--baseline-src", help="alternate every run with the k2 under this source directory")
    args = ap.parse_args()
    path = capture(args.trades, args.seed)
    rows = []
    for mode in args.modes.split(","):
        trees = [(mode, None)] + ([(f"{mode} (baseline {args.baseline_src})", args.baseline_src)] if args.baseline_src else [])
        got: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in trees}
        for _ in range(args.runs):
            for label, src in trees:
                r, m, cpu = one_run(path, args.trades, no_raw=(mode == "no-raw"), src=src)
                got[label].append((r, m, cpu))
                print(f"  {label}: {r:,.0f} trades/s, peak RSS {m:,.0f} MiB, {cpu:.1f} CPU-s", file=sys.stderr)
        rows.extend((label, *zip(*runs)) for label, runs in got.items())
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    extra = (f" --modes {args.modes}" if args.modes != "raw,no-raw" else "") + (
        f" --baseline-src {args.baseline_src}" if args.baseline_src else "")
    print(f"command: python benchmarks/bench_replay.py --trades {args.trades} --runs {args.runs}{extra}")
    print(f"capture: {path.name} ({path.stat().st_size / 2**20:,.0f} MiB zstd), {args.trades:,} trades, 34 pairs\n")
    # CPU-s (user + system, the replay process and its threads) moves less with this machine's speed than wall time
    # does, and both cores are busy: a change that saves CPU is what raises trades/s here
    print("| mode | trades/s median | range | peak RSS median (MiB) | CPU-s median | target |")
    print("|---|---:|---|---:|---:|---|")
    for mode, rates, rss, cpu in rows:
        label = {"raw": "k2 replay (raw layer + trades + 6 candle views)",
                 "no-raw": "k2 replay --no-raw (trades + 6 candle views)"}.get(mode, mode)
        print(f"| {label} | {statistics.median(rates):,.0f} | {min(rates):,.0f} - {max(rates):,.0f} | "
              f"{statistics.median(rss):,.0f} | {statistics.median(cpu):.1f} | >= 500,000 trades/s, < 2,048 MiB |")


if __name__ == "__main__":
    main()
