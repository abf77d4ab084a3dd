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
import numpy as np
import pyarrow as pa

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
    """Frames of one exchange in file order: lists, or Arrow/numpy columns from the C scanner."""

    frames: list[str] | pa.Array = field(default_factory=list)
    ts_recv: list[int] | np.ndarray = field(default_factory=list)
    conn: list[str] | pa.Array = field(default_factory=list)


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
    try:
        from k2.venues import _scan
    except ImportError:  # pragma: no cover - no C compiler at install time
        _scan = None
    if _scan is None:
        yield from _read_lines(path, chunk_lines)
    else:
        yield from _prefetch(_read_blocks(path, _scan, block=chunk_lines * 200))


def _prefetch(chunks: Iterator[CaptureChunk], depth: int = 3) -> Iterator[CaptureChunk]:
    """Run ``chunks`` in a background thread: decompression and the C scanner release the GIL, so reading
    overlaps with parsing and storing."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, name="k2-capture-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _read_blocks(path, _scan, block: int) -> Iterator[CaptureChunk]:
    """The C scanner decodes whole blocks of lines into Arrow buffers; msgspec takes the lines it leaves.

    The decompressed text goes into one reused buffer (``readinto``): a fresh ``bytes`` per block, joined with
    the previous block's tail and sliced again, cost three copies of every byte and the page faults of new
    memory, about as much CPU as the decompression itself. A line longer than the buffer grows it.
    """
    line_no = 0
    buf = bytearray(block)
    view = memoryview(buf)
    filled = 0
    with open_capture(path) as fh:
        while True:
            if filled == len(buf):  # no line end in a full buffer: a line longer than the block
                view.release()
                buf.extend(bytes(len(buf)))
                view = memoryview(buf)
            eof = False
            while filled < len(buf):
                try:
                    k = fh.readinto(view[filled:])
                except (OSError, EOFError, ValueError) as exc:
                    raise CaptureError(f"{path}: unreadable after line {line_no}: {exc}") from exc
                if not k:
                    eof = True
                    break
                filled += k
            if eof:
                if not filled:
                    return
                cut = filled - 1  # the last line may have no line end
            else:
                cut = buf.rfind(b"\n", 0, filled)
                if cut < 0:
                    continue
            chunk = _scan_block(_scan, view[: cut + 1], line_no)
            line_no += chunk.lines
            rest = filled - (cut + 1)
            buf[:rest] = buf[cut + 1 : filled]
            filled = rest
            yield chunk
            if eof:
                return


_EX_CODES = {1: "binance", 2: "kraken", 3: "coinbase"}


def _scan_block(_scan, data, line_no: int) -> CaptureChunk:
    """``data``: complete lines (bytes or a view of the reader's buffer; nothing returned refers to it)."""
    n, fallback, groups = _scan.scan_capture(data, MIN_TS_US, MAX_TS_RECV_US)
    bad: list[BadLine] = []
    extra: dict[str, list[tuple[int, CaptureLine]]] = {}
    for i, a, b in np.frombuffer(fallback, dtype=np.int64).reshape(-1, 3).tolist():
        rec = _decode_line(bytes(data[a:b]), line_no + i + 1, bad)
        if rec is not None:
            extra.setdefault(rec.exchange, []).append((i, rec))
    by_ex: dict[str, ExchangeFrames] = {}
    for code, exchange in _EX_CODES.items():
        count, lines, ts, conn, conn_off, frame, frame_off = groups[code - 1]
        more = extra.get(exchange, [])
        if not count and not more:
            continue
        group = ExchangeFrames(
            pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(frame_off), pa.py_buffer(frame)]),
            np.frombuffer(ts, dtype=np.int64),
            pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(conn_off), pa.py_buffer(conn)]),
        )
        if more:  # lines the C scanner left but msgspec accepted: merge back in file order
            pos = np.concatenate([np.frombuffer(lines, dtype=np.int64), np.array([i for i, _ in more], dtype=np.int64)])
            order = np.argsort(pos, kind="stable")
            f = pa.concat_arrays([group.frames, pa.array([r.frame for _, r in more], pa.string())])
            c = pa.concat_arrays([group.conn, pa.array([r.conn or "" for _, r in more], pa.string())])
            t = np.concatenate([group.ts_recv, np.array([r.ts_recv for _, r in more], dtype=np.int64)])
            o = pa.array(order)
            group = ExchangeFrames(f.take(o), t[order], c.take(o))
        by_ex[exchange] = group
    return CaptureChunk(by_ex, bad, n, len(data))


def _decode_line(raw: bytes, line_no: int, bad: list[BadLine]) -> CaptureLine | None:
    try:
        rec = _dec.decode(raw)
    except UnicodeDecodeError as exc:
        bad.append(_bad(line_no, raw, f"bad capture line: invalid UTF-8 ({exc.reason} at byte {exc.start})"))
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if raw.strip():
            bad.append(_bad(line_no, raw, f"bad capture line: {exc}"))
        return None
    if rec.exchange not in EXCHANGES:
        bad.append(_bad(line_no, raw, f"bad capture line: unknown exchange {rec.exchange!r}"))
        return None
    if not MIN_TS_US <= rec.ts_recv < MAX_TS_RECV_US:
        bad.append(_bad(line_no, raw, f"bad capture line: ts_recv out of range ({rec.ts_recv})"))
        return None
    return rec


def _read_lines(path: str | os.PathLike[str], chunk_lines: int) -> Iterator[CaptureChunk]:
    """Pure-Python reader (no C scanner): msgspec decodes every line."""
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
            for raw in lines:
                line_no += 1
                size += len(raw)
                rec = _decode_line(raw, line_no, bad)
                if rec is None:
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
