"""Turning parsed frames into ingest batches (shared by replay and, later, the live feeds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from k2.bus.base import IngestBatch
from k2.hot.chdb_store import DEAD_SCHEMA, RAW_SCHEMA
from k2.model.trade import TRADE_SCHEMA, TS_TYPE
from k2.venues.base import ParseResult


def _py(value):
    return value.as_py() if isinstance(value, pa.Scalar) else value


def _to_bytes(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogateescape")


def raw_table(exchange: str, frames: Sequence[str], ts_recv: Sequence[int], conn: Sequence[str]) -> pa.Table:
    n = len(frames)
    return pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(exchange, pa.string()), n),
            conn if isinstance(conn, pa.Array) else pa.array(conn, pa.string()),
            pa.array(np.asarray(ts_recv, dtype=np.int64), pa.int64()).cast(TS_TYPE),
            _frames_array(frames),
        ],
        schema=RAW_SCHEMA,
    )


def _frames_array(frames: Sequence[str | bytes]) -> pa.Array:
    if isinstance(frames, pa.Array):
        return frames
    try:
        return pa.array(frames, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        # bytes frames, or text that is not valid Unicode (lone surrogates): keep valid UTF-8 in the raw layer
        # with U+FFFD where it was not; the exact bytes are in the dead letters
        return pa.array([_to_bytes(f).decode("utf-8", "replace") for f in frames], pa.string())


def dead_table(rows: list[tuple[str, str, int, str, str | bytes]]) -> pa.Table:
    """rows of (exchange, conn, ts_recv µs, reason, frame)."""
    if not rows:
        return DEAD_SCHEMA.empty_table()
    ex, conn, ts, reason, frame = zip(*rows)
    return pa.Table.from_arrays(
        [
            pa.array(ex, pa.string()),
            pa.array(conn, pa.string()),
            pa.array(ts, pa.int64()).cast(TS_TYPE),
            pa.array(reason, pa.string()),
            pa.array([_to_bytes(f) for f in frame], pa.binary()),
        ],
        schema=DEAD_SCHEMA,
    )


def dead_only_batch(rows: list[tuple[str, str, int, str, str | bytes]]) -> IngestBatch:
    """A batch holding only dead letters (e.g. a chunk of capture lines that were all unreadable)."""
    return IngestBatch(raw=RAW_SCHEMA.empty_table(), trades=TRADE_SCHEMA.empty_table(), dead=dead_table(rows))


def gaps_only_batch(gaps: pa.Table) -> IngestBatch:
    """A batch holding only gap records (the live feeds' continuity bookkeeping)."""
    return IngestBatch(
        raw=RAW_SCHEMA.empty_table(), trades=TRADE_SCHEMA.empty_table(), dead=DEAD_SCHEMA.empty_table(), gaps=gaps
    )


def build_batch(
    exchange: str,
    frames: Sequence[str],
    ts_recv: Sequence[int],
    conn: Sequence[str],
    result: ParseResult,
    extra_dead: list[tuple[str, str, int, str, str | bytes]] | None = None,
) -> IngestBatch:
    dead_rows = [(exchange, _py(conn[i]), int(ts_recv[i]), reason, _py(frames[i])) for i, reason in result.dead]
    if extra_dead:
        dead_rows.extend(extra_dead)
    return IngestBatch(
        raw=raw_table(exchange, frames, ts_recv, conn),
        trades=result.trades if result.trades is not None else TRADE_SCHEMA.empty_table(),
        dead=dead_table(dead_rows),
        frames=len(frames),
        control=result.control,
        ignored=result.ignored,
    )
