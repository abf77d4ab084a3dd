"""The ``k2`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from k2 import __version__
from k2.errors import CaptureError, ConfigError, DataError, K2Error, QueryFailed, QueryRefused, StoreError

#: --format -> (ClickHouse output format, extra output settings)
FORMATS = {
    "csv": ("CSVWithNames", []),
    "json": ("JSONEachRow", ["output_format_json_quote_decimals = 1", "output_format_json_quote_64bit_integers = 1"]),
    "table": ("PrettyCompactMonoBlock", []),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default: $K2_DATA_DIR, else ./k2-data)")
    p.add_argument("--config", help="config file (default: $K2_CONFIG, else ./k2.toml if present)")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535")
    return port


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="API listen address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=_port, help="API port (default: api.port, 8000; 0 picks a free one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2", description="K2 crypto market-data lakehouse")
    parser.add_argument("--version", action="version", version=f"k2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="replay capture files into the store (idempotent)")
    rp.add_argument("files", nargs="+", help="capture files (.jsonl, .jsonl.gz, .jsonl.zst)")
    rp.add_argument("--no-raw", action="store_true", help="do not copy frames into the raw layer")
    _common(rp)

    sp = sub.add_parser("sql", help="run a read-only SQL query against the store")
    sp.add_argument("query", help="one SELECT statement")
    sp.add_argument("--format", choices=sorted(FORMATS), default="table")
    sp.add_argument("--as-of", help="read the cold tier as it was at this time (ISO 8601 UTC or integer µs): time travel")
    _common(sp)

    up = sub.add_parser("up", help="run the platform: live feeds, bus, hot writer (Ctrl-C drains and stops)")
    up.add_argument("--exchanges", help="comma-separated feeds to run (default: all three, or `exchanges` in the config)")
    up.add_argument(
        "--simulate", action="store_true", help="run against the built-in exchange simulator on 127.0.0.1 (no internet needed)"
    )
    up.add_argument("--sim-rate", type=float, default=50.0, help="with --simulate: trades per second per exchange")
    up.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _api_options(up)
    up.add_argument("--no-api", action="store_true", help="do not serve the HTTP API, dashboard and metrics")
    _common(up)

    sv = sub.add_parser("serve", help="serve the HTTP API, dashboard and metrics over a data directory (no feeds)")
    _api_options(sv)
    sv.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _common(sv)

    sim = sub.add_parser("simulate", help="serve a local exchange simulator (WebSocket + REST) on 127.0.0.1")
    sim.add_argument("--exchanges", help="comma-separated exchanges to simulate (default: all three)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0, help="first port (binance); kraken +1, coinbase +2 (default: any free)")
    sim.add_argument("--rate", type=float, default=50.0, help="trades per second per exchange")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--json", action="store_true", help="print the settings as one JSON line first (for programs)")

    op = sub.add_parser("offload", help="run one offload cycle: hot trades, closed candles and raw frames to Iceberg")
    _common(op)
    mp = sub.add_parser("maintain", help="cold-tier maintenance: compaction, snapshot expiry, orphan files, hot/cold audit")
    _common(mp)

    cp = sub.add_parser("capture", help="capture files")
    csub = cp.add_subparsers(dest="capture_command", required=True)
    synth = csub.add_parser("synth", help="write a synthetic capture of the default pairs (demos, benchmarks)")
    synth.add_argument("out", help="output file (.jsonl, .jsonl.gz or .jsonl.zst)")
    synth.add_argument("--trades", type=int, default=100_000)
    synth.add_argument("--seed", type=int, default=7)
    synth.add_argument("--rate", type=float, default=5_000.0, help="trades per second of exchange time")
    _common(synth)
    export = csub.add_parser("export", help="write the raw frames of a time range to a capture file (replayable)")
    export.add_argument("out", help="output file (.jsonl, .jsonl.gz or .jsonl.zst)")
    export.add_argument("--start", required=True, help="receive time, ISO 8601 (UTC) or integer µs; inclusive")
    export.add_argument("--end", required=True, help="receive time, ISO 8601 (UTC) or integer µs; exclusive")
    export.add_argument("--exchange", action="append", choices=["binance", "kraken", "coinbase"], help="repeatable")
    _common(export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"k2: configuration error: {exc}", file=sys.stderr)
        return 2
    except (QueryRefused, QueryFailed) as exc:
        print(f"k2: query refused: {exc}" if isinstance(exc, QueryRefused) else f"k2: query failed: {exc}", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"k2: capture error: {exc}", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"k2: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"k2: store error: {exc}", file=sys.stderr)
        return 1
    except K2Error as exc:
        print(f"k2: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _exchanges(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(x.strip().lower() for x in text.split(",") if x.strip())


def _absolute(args: argparse.Namespace) -> None:
    """File arguments as absolute paths: opening a store with a cold tier may change the working directory."""
    import os

    for name in ("files", "out", "config", "data_dir"):
        value = getattr(args, name, None)
        if isinstance(value, list):
            setattr(args, name, [os.path.abspath(v) for v in value])
        elif isinstance(value, str):
            setattr(args, name, os.path.abspath(value))


def _dispatch(args: argparse.Namespace) -> int:
    from k2.settings import load_settings

    _absolute(args)
    if args.command == "simulate":
        return _simulate(args)
    overrides = {"data_dir": args.data_dir}
    if args.command == "up":
        overrides["exchanges"] = _exchanges(args.exchanges)
    settings = load_settings(args.config, **overrides)
    if args.command in ("up", "serve"):
        api = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if getattr(args, "no_api", False):
            api["enabled"] = False
        if api:
            settings = settings.with_api(**api)
    if args.command == "up":
        return _up(args, settings)
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "capture" and args.capture_command == "export":
        return _export(args, settings)
    if args.command == "offload":
        return _offload(settings)
    if args.command == "maintain":
        return _maintain(settings)
    if args.command == "replay":
        return _replay(args, settings)
    if args.command == "sql":
        return _sql(args, settings)
    if args.command == "capture" and args.capture_command == "synth":
        from k2.capture.synth import write_synthetic_capture

        lines = write_synthetic_capture(
            args.out, args.trades, instruments=settings.instrument_table(), seed=args.seed, rate=args.rate
        )
        print(f"wrote {lines} lines ({args.trades} trades) to {args.out}")
        return 0
    raise AssertionError(args.command)


def _open_store(settings):
    from k2.hot.chdb_store import ChdbStore

    return ChdbStore(settings.data_dir)


def _replay(args, settings) -> int:
    from pathlib import Path

    from k2.pipeline.replay import replay_files, terminal_progress
    from k2.venues.registry import make_parsers

    for f in args.files:
        if not Path(f).is_file():
            raise CaptureError(f"no such capture file: {f}")
    parsers = make_parsers(
        settings.instrument_table(), coinbase_advanced_side_is_maker=settings.coinbase_advanced_side_is_maker
    )
    progress = terminal_progress()
    with _open_store(settings) as store:
        summary = replay_files(
            args.files,
            store,
            parsers,
            store_raw=settings.writer.store_raw and not args.no_raw,
            writer_rows=settings.writer.max_rows,
            progress=progress,
        )
    if progress is not None:
        sys.stderr.write("\n")
    print("\n".join(summary.lines_text()))
    return 0


def _until_signal(body, log_level: str | None = None) -> int:
    """Run ``await body(stop)`` on a fresh event loop; SIGINT and SIGTERM set ``stop``."""
    import asyncio
    import signal

    if log_level is not None:
        import logging

        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await body(stop)

    asyncio.run(main())
    return 0


def _up(args, settings) -> int:
    import asyncio

    from k2.pipeline.live import run_platform

    async def main(stop: asyncio.Event) -> None:
        sim = None
        run_settings = settings
        if args.simulate:
            # the simulator stands in for the exchanges, which never share our process or its GIL: it runs as a
            # child process (`k2 simulate`), so what K2 spends is measured apart from what the "exchanges" spend
            from k2.sim.process import SimulatorProcess

            sim = SimulatorProcess(settings.exchanges, args.sim_rate)
            urls = await sim.start(coinbase_advanced=settings.coinbase_feed == "advanced")
            run_settings = settings.model_copy(update=urls)
            print("k2 up --simulate: exchange simulator on 127.0.0.1 (pid %d); " % sim.pid
                  + ", ".join(f"{k}={v}" for k, v in urls.items()), file=sys.stderr)
        from k2.hot.chdb_store import ChdbStore

        store = await asyncio.to_thread(ChdbStore, settings.data_dir)
        server = None
        ctx = None
        try:
            if settings.api.enabled:
                # the API reads the store this process owns (chdb allows one process per store); it starts
                # first (ready = 503 until the platform runs) and stops last, after everything is stored
                from k2.api.server import build_context, start_api

                ctx = build_context(run_settings, store, mode="up")
                server = await start_api(ctx, settings.api.host, settings.api.port)
                print(f"k2 up: API {server.url} (dashboard {server.url}/, docs {server.url}/docs, "
                      f"metrics {server.url}/metrics)", file=sys.stderr, flush=True)

            def started(platform) -> None:
                if ctx is not None:
                    ctx.platform = platform
                    if ctx.metrics is not None:
                        ctx.metrics.attach(platform)
                from k2.api.server import freeze_startup_objects

                freeze_startup_objects()

            await run_platform(run_settings, stop, store=store, on_start=started,
                               on_stored=ctx.on_stored if ctx is not None else None)
        finally:
            if server is not None:
                await server.stop()
            await asyncio.to_thread(store.close)
            if sim is not None:
                await sim.stop()

    return _until_signal(main, args.log_level)


def _serve(args, settings) -> int:
    from k2.api.server import serve

    return _until_signal(lambda stop: serve(settings, stop), args.log_level)


def _simulate(args) -> int:
    from k2.model.instrument import EXCHANGES
    from k2.sim import SimConfig, serve

    exchanges = _exchanges(args.exchanges) or EXCHANGES
    unknown = [e for e in exchanges if e not in EXCHANGES]
    if unknown:
        raise ConfigError("exchanges", f"unknown exchange(s) {', '.join(unknown)} (expected {', '.join(EXCHANGES)})")
    config = SimConfig(exchanges=tuple(exchanges), host=args.host, base_port=args.port, rate=args.rate, seed=args.seed)
    return _until_signal(lambda stop: serve(config, stop, json_line=args.json))


def _sql_as_of(args, settings, store, fmt, extra) -> str:
    from k2.capture.export import parse_time
    from k2.cold.catalog import open_catalog
    from k2.cold.tiers import install_asof_views, install_cold_tables
    from k2.query.readonly import ReadOnlySQL

    at_ms = parse_time(args.as_of, "--as-of") // 1000
    catalog = open_catalog(settings)
    install_cold_tables(store, catalog, settings)
    install_asof_views(store)
    first = min((s.timestamp_ms for s in catalog.load_table("k2.trades").snapshots()), default=None)
    if first is None or at_ms < first:
        raise DataError(f"--as-of: the cold tier has no snapshot at or before {args.as_of}")
    ro = ReadOnlySQL(store, timeout_s=settings.query.timeout_s, output_settings=[*extra, f"iceberg_timestamp_ms = {at_ms}"])
    store.execute("USE k2_asof")
    try:
        return ro.text(args.query, fmt)
    finally:
        store.execute("USE default")


def _offload(settings) -> int:
    from k2.cold.catalog import open_catalog
    from k2.cold.offload import Offloader

    catalog = open_catalog(settings)
    from k2.cold.tiers import apply_retention

    with _open_store(settings) as store:
        result = Offloader(store, catalog, settings).run_cycle()
        kept = apply_retention(store, catalog, settings, time.time_ns() // 1000)
    print("\n".join(result.lines()))
    print(f"hot trades dropped {kept.trades_dropped} (older than {settings.cold.hot_retention_days:g} days, checked against cold)")
    return 0


def _maintain(settings) -> int:
    from k2.cold.catalog import open_catalog
    from k2.cold.maintain import maintain

    catalog = open_catalog(settings)
    with _open_store(settings) as store:
        report = maintain(store, catalog, settings)
    print("\n".join(report.lines()))
    return 1 if report.mismatches or report.errors else 0


def _export(args, settings) -> int:
    from k2.capture.export import export_capture, parse_time

    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    with _open_store(settings) as store:
        lines = export_capture(store, args.out, start, end, args.exchange)
    print(f"wrote {lines} frames to {args.out}")
    return 0


def _sql(args, settings) -> int:
    from k2.query.readonly import ReadOnlySQL

    fmt, extra = FORMATS[args.format]
    with _open_store(settings) as store:
        if args.as_of:
            out = _sql_as_of(args, settings, store, fmt, extra)
        else:
            ro = ReadOnlySQL(store, timeout_s=settings.query.timeout_s, output_settings=extra)
            out = ro.text(args.query, fmt)
    if args.format == "json":
        rows = [ln for ln in out.splitlines() if ln.strip()]
        out = "[" + ",\n".join(rows) + "]\n"
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
