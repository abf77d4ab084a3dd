"""``k2 capture export``: raw frames of a time range back into a capture file.

The raw layer holds every WebSocket frame and every REST backfill response as received, with its receive
time and connection id, so an exported capture replayed with ``k2 replay`` gives the same trades.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone

from k2.capture.writer import CaptureWriter
from k2.errors import DataError
from k2.hot.chdb_store import sql_str

#: rows are read in windows of receive time, so memory stays bounded whatever the range
WINDOW_US = 300 * 1_000_000


def parse_time(text: str, name: str) -> int:
    """An ISO 8601 time (``2026-11-24``, ``2026-11-24T10:00:00Z``; naive means UTC) or integer µs -> µs."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{name}: {text!r} is neither an ISO 8601 time nor integer microseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def export_capture(
    store, out: str | os.PathLike[str], start_us: int, end_us: int, exchanges: Sequence[str] | None = None
) -> int:
    """Write the raw frames received in [start_us, end_us) to ``out``; returns the number of lines."""
    if end_us <= start_us:
        raise DataError("the end of the range must be after its start")
    where_ex = ""
    if exchanges:
        where_ex = f" AND exchange IN ({', '.join(sql_str(e) for e in exchanges)})"
    bounds = store.query_arrow(
        "SELECT toUnixTimestamp64Micro(min(ts_recv)) AS lo, toUnixTimestamp64Micro(max(ts_recv)) AS hi, count() AS n "
        f"FROM raw_frames WHERE ts_recv >= fromUnixTimestamp64Micro({start_us}, 'UTC') "
        f"AND ts_recv < fromUnixTimestamp64Micro({end_us}, 'UTC'){where_ex}"
    ).to_pylist()[0]
    lines = 0
    with CaptureWriter(out) as w:
        if not bounds["n"]:
            return 0
        t = max(start_us, int(bounds["lo"]))
        stop = min(end_us, int(bounds["hi"]) + 1)
        while t < stop:
            hi = min(stop, t + WINDOW_US)
            rows = store.query_arrow(
                "SELECT exchange, conn, toUnixTimestamp64Micro(ts_recv) AS ts, frame FROM raw_frames FINAL "
                f"WHERE ts_recv >= fromUnixTimestamp64Micro({t}, 'UTC') AND ts_recv < fromUnixTimestamp64Micro({hi}, 'UTC')"
                f"{where_ex} ORDER BY ts_recv, exchange, conn"
            )
            if rows.num_rows:
                ex, conn, ts, frame = (rows.column(i).to_pylist() for i in range(4))
                w.write_many(
                    [
                        (e, s, f.decode("utf-8", "replace") if isinstance(f, bytes) else f, c or None)
                        for e, c, s, f in zip(ex, conn, ts, frame)
                    ]
                )
                lines += rows.num_rows
            t = hi
    return lines
