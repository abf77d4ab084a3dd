"""The ``k2`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from k2 import __version__
from k2.errors import CaptureError, ConfigError, K2Error, QueryFailed, QueryRefused, StoreError

#: --format -> (ClickHouse output format, extra output settings)
FORMATS = {
    "csv": ("CSVWithNames", []),
    "json": ("JSONEachRow", ["output_format_json_quote_decimals = 1", "output_format_json_quote_64bit_integers = 1"]),
    "table": ("PrettyCompactMonoBlock", []),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default: $K2_DATA_DIR, else ./k2-data)")
    p.add_argument("--config", help="config file (default: $K2_CONFIG, else ./k2.toml if present)")


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
    _common(sp)

    cp = sub.add_parser("capture", help="capture files")
    csub = cp.add_subparsers(dest="capture_command", required=True)
    synth = csub.add_parser("synth", help="write a synthetic capture of the default pairs (demos, benchmarks)")
    synth.add_argument("out", help="output file (.jsonl, .jsonl.gz or .jsonl.zst)")
    synth.add_argument("--trades", type=int, default=100_000)
    synth.add_argument("--seed", type=int, default=7)
    synth.add_argument("--rate", type=float, default=5_000.0, help="trades per second of exchange time")
    _common(synth)
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
    except StoreError as exc:
        print(f"k2: store error: {exc}", file=sys.stderr)
        return 1
    except K2Error as exc:
        print(f"k2: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from k2.settings import load_settings

    settings = load_settings(args.config, data_dir=args.data_dir)
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


def _sql(args, settings) -> int:
    from k2.query.readonly import ReadOnlySQL

    fmt, extra = FORMATS[args.format]
    with _open_store(settings) as store:
        ro = ReadOnlySQL(store, timeout_s=settings.query.timeout_s, output_settings=extra)
        out = ro.text(args.query, fmt)
    if args.format == "json":
        rows = [ln for ln in out.splitlines() if ln.strip()]
        out = "[" + ",\n".join(rows) + "]\n"
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
