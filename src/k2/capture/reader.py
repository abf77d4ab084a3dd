"""Streaming capture reader. A bad line is reported with its reason and raw bytes; it never stops the read."""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from k2.errors import CaptureError
from k2.model.instrument import EXCHANGES
from k2.venues.base import MAX_TS_RECV_US, MIN_TS_US


class CaptureLine(msgspec.Struct, gc=False):
    exchange: str
    ts_recv: int
    frame: str
    conn: str | None = None


@dataclass
class ExchangeFrames:
    frames: list[str] = field(default_factory=list)
    ts_recv: list[int] = field(default_factory=list)
    conn: list[str] = field(default_factory=list)


@dataclass
class BadLine:
    line_no: int
    exchange: str
    ts_recv: int
    reason: str
    raw: bytes


@dataclass
class CaptureChunk:
    by_exchange: dict[str, ExchangeFrames]
    bad: list[BadLine]
    lines: int
    bytes_read: int


_dec = msgspec.json.Decoder(CaptureLine)
_EXCHANGE_RE = re.compile(rb'"exchange"\s*:\s*"([a-z]+)"')
_TS_RE = re.compile(rb'"ts_recv"\s*:\s*(\d{1,19})')


def open_capture(path: str | os.PathLike[str], mode: str = "rb") -> io.BufferedIOBase:
    p = Path(path)
    try:
        if p.suffix == ".gz":
            return gzip.open(p, mode)  # type: ignore[return-value]
        if p.suffix == ".zst":
            import zstandard

            if "r" in mode:
                return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(p, "rb")), 1 << 20)
            return zstandard.ZstdCompressor(level=3).stream_writer(open(p, "wb"))  # type: ignore[return-value]
        return open(p, mode)  # type: ignore[return-value]
    except OSError as exc:
        raise CaptureError(f"cannot open capture {p}: {exc}") from exc


def read_capture(path: str | os.PathLike[str], chunk_lines: int = 50_000) -> Iterator[CaptureChunk]:
    """Yield chunks of decoded capture lines, grouped by exchange in file order."""
    line_no = 0
    with open_capture(path) as fh:
        while True:
            try:
                lines = fh.readlines(chunk_lines * 220)
            except (OSError, EOFError, ValueError) as exc:
                raise CaptureError(f"{path}: unreadable after line {line_no}: {exc}") from exc
            if not lines:
                return
            by_ex: dict[str, ExchangeFrames] = {}
            bad: list[BadLine] = []
            size = 0
            decode = _dec.decode
            for raw in lines:
                line_no += 1
                size += len(raw)
                try:
                    rec = decode(raw)
                except UnicodeDecodeError as exc:
                    bad.append(_bad(line_no, raw, f"bad capture line: invalid UTF-8 ({exc.reason} at byte {exc.start})"))
                    continue
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    if not raw.strip():
                        continue
                    bad.append(_bad(line_no, raw, f"bad capture line: {exc}"))
                    continue
                if rec.exchange not in EXCHANGES:
                    bad.append(_bad(line_no, raw, f"bad capture line: unknown exchange {rec.exchange!r}"))
                    continue
                if not MIN_TS_US <= rec.ts_recv < MAX_TS_RECV_US:
                    bad.append(_bad(line_no, raw, f"bad capture line: ts_recv out of range ({rec.ts_recv})"))
                    continue
                group = by_ex.get(rec.exchange)
                if group is None:
                    group = by_ex[rec.exchange] = ExchangeFrames()
                group.frames.append(rec.frame)
                group.ts_recv.append(rec.ts_recv)
                group.conn.append(rec.conn or "")
            yield CaptureChunk(by_ex, bad, len(lines), size)


def _bad(line_no: int, raw: bytes, reason: str) -> BadLine:
    m = _EXCHANGE_RE.search(raw)
    exchange = m.group(1).decode() if m and m.group(1).decode() in EXCHANGES else "unknown"
    t = _TS_RE.search(raw)
    ts = int(t.group(1)) if t else 0
    if not MIN_TS_US <= ts < MAX_TS_RECV_US:
        ts = 0
    return BadLine(line_no, exchange, ts, f"{reason} (line {line_no})", raw.rstrip(b"\r\n"))
