"""What every venue parser shares: the parse result, and the one place trade columns are validated.

A parser decodes each frame with msgspec structs (fast path), recognises control frames, and hands raw trade
columns to :func:`finalize_trades`, which converts them to exact Arrow columns in a few vectorized passes
and sends every row that fails a check to the dead letters with a reason. No per-trade ``Decimal`` or dict
is built on the fast path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.model.instrument import Instrument
from k2.model.trade import DEC_SCALE, DECIMAL_TYPE, EXACT, TRADE_SCHEMA, TS_TYPE, canonical_decimal

try:  # the optional C fast path (setup.py); without it the msgspec path does all the work
    from k2.venues import _scan
except ImportError:  # pragma: no cover - exercised on machines without a C compiler
    _scan = None

#: Earliest plausible exchange trade time (2009-01-03, the Bitcoin genesis block), in µs.
MIN_TS_US = 1_230_940_800_000_000
#: A trade time may run ahead of the local receive clock by this much (clock skew) before it is refused.
MAX_AHEAD_US = 86_400_000_000
#: Receive times outside [2009-01-03, 2200-01-01) are refused.
MAX_TS_RECV_US = 7_258_118_400_000_000

_ZERO = pa.scalar(Decimal(0), DECIMAL_TYPE)
_SIDES = pa.array(["buy", "sell"])


class ControlEvent(msgspec.Struct, frozen=True):
    """A recognised non-trade frame: what the session loop reacts to (acks, heartbeats, shutdown...)."""

    index: int
    kind: str  # ack | subscribe_error | heartbeat | status | pong | shutdown | error | ping | rest | rest_error
    detail: dict = {}


@dataclass
class ParseResult:
    trades: pa.Table
    dead: list[tuple[int, str]] = field(default_factory=list)  # (frame index, reason)
    events: list[ControlEvent] = field(default_factory=list)
    trade_frames: int = 0
    control: int = 0  # acks, heartbeats, status, pongs, exchange error messages, shutdown notices
    ignored: int = 0  # well-formed frames of types K2 does not store (aggTrade, unknown channels)

    def merge_counts(self, other: "ParseResult") -> None:
        self.trade_frames += other.trade_frames
        self.control += other.control
        self.ignored += other.ignored


class VenueParser(Protocol):
    """Pure frame parser of one exchange."""

    exchange: str

    def parse(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """Parse a batch of frames received at ``ts_recv`` (µs each). Never raises on bad input."""
        ...


@dataclass
class RawTrades:
    """Trade columns as the wire gave them, one entry per trade, before conversion and checks."""

    index: list[int] = field(default_factory=list)  # frame index of each trade
    native: list = field(default_factory=list)
    trade_id: list = field(default_factory=list)
    price: list = field(default_factory=list)  # str or Decimal
    qty: list = field(default_factory=list)
    side: list | None = None  # aggressor side text, or None when ``sell`` is given
    sell: list | None = None  # True when the aggressor sold
    ts: list = field(default_factory=list)  # int µs, or RFC3339 text when ``ts_text``
    ts_text: bool = False
    #: row -> why the parser could not read that trade (missing field, wrong type). Such a row holds
    #: placeholder values; :func:`finalize_trades` drops it and reports this reason, so a frame's dead letter
    #: is the reason of its first bad row whichever check found it.
    reasons: dict[int, str] = field(default_factory=dict)

    def add(self, frame: int, native, trade_id, price, qty, side, ts, reason: str = "") -> None:
        """One row; ``side`` goes to ``side`` or ``sell``, whichever this batch keeps. A ``reason`` marks a row
        that could not be read (its values are placeholders)."""
        if reason:
            self.reasons[len(self.index)] = reason
        self.index.append(frame)
        self.native.append(native)
        self.trade_id.append(trade_id)
        self.price.append(price)
        self.qty.append(qty)
        (self.side if self.side is not None else self.sell).append(side)
        self.ts.append(ts)

    def add_many(self, frame: int, native, trade_ids: list, prices: list, qtys: list, sides: list, ts: list) -> None:
        """Rows of one frame and one instrument."""
        n = len(trade_ids)
        self.index.extend([frame] * n)
        self.native.extend([native] * n)
        self.trade_id.extend(trade_ids)
        self.price.extend(prices)
        self.qty.extend(qtys)
        (self.side if self.side is not None else self.sell).extend(sides)
        self.ts.extend(ts)


def decode_object(decoder: msgspec.json.Decoder, i: int, frame: str | bytes, result: ParseResult) -> dict | None:
    """The general path's first step: the frame as a JSON object, or a dead letter saying why not."""
    try:
        msg = decoder.decode(frame)
    except msgspec.DecodeError as exc:
        result.dead.append((i, f"invalid JSON: {exc}"))
        return None
    except UnicodeError as exc:
        result.dead.append((i, f"invalid UTF-8: {exc.reason} at {exc.start}"))
        return None
    if not isinstance(msg, dict):
        result.dead.append((i, "not a JSON object"))
        return None
    return msg


def decimal_reason(value: object, positive: bool = True) -> str:
    """Why a wire value is not an acceptable price or quantity ('' when it is).

    ``positive=False`` leaves the sign to the later vectorized check, so both parse paths report the reasons of
    a frame in the same order (format, time range, then sign).
    """
    if isinstance(value, bool) or value is None:
        return f"not a decimal ({value!r})"
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError, TypeError):
        return f"not a decimal ({value!r})"
    if not d.is_finite():
        return f"not a finite decimal ({value!r})"
    if positive and d <= 0:
        return f"not positive ({canonical_decimal(d)!r})"
    exp = d.normalize(EXACT).as_tuple().exponent  # not the default 28-digit context: it would round
    if isinstance(exp, int) and -exp > DEC_SCALE:
        return f"more than {DEC_SCALE} decimal places ({value!r})"
    if abs(d) >= Decimal(10) ** (38 - DEC_SCALE):
        return f"too large ({value!r})"
    if isinstance(value, str) and value != value.strip():
        return f"not a decimal ({value!r})"
    return ""


def _decimal_column(values, name: str, bad: dict[int, str]) -> pa.Array:
    """Exact decimal128 column; rows that do not convert get a reason in ``bad`` and a placeholder."""
    if isinstance(values, pa.Array):
        return values
    try:
        if values and isinstance(values[0], str):
            arr = pc.cast(pa.array(values, pa.string()), DECIMAL_TYPE)
        else:
            arr = pa.array(values, DECIMAL_TYPE)
        if arr.null_count == 0:
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError, InvalidOperation):
        pass
    out = []
    for i, v in enumerate(values):
        why = decimal_reason(v, positive=False)
        if why:
            bad.setdefault(i, f"{name}: {why}")
            out.append(Decimal(1))
        else:
            out.append(Decimal(v.strip()) if isinstance(v, str) else Decimal(v))
    return pa.array(out, DECIMAL_TYPE)


def _int_column(values, name: str, typ: pa.DataType, bad: dict[int, str]) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    try:
        # numpy arrays, or lists msgspec already typed as int (a bool cannot reach here)
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        pass
    out = []
    lo, hi = (0, 2**64 - 1) if typ == pa.uint64() else (-(2**63), 2**63 - 1)
    for i, v in enumerate(values):
        if type(v) is int and lo <= v <= hi:
            out.append(v)
        else:
            bad.setdefault(i, f"{name}: not an integer in range ({v!r})")
            out.append(0)
    return pa.array(out, typ)


#: RFC3339 as sent by the exchanges; the same pattern serves Python's ``re`` and Arrow's RE2.
_RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(_RFC3339_PATTERN.replace("$", "\\Z"))


def rfc3339_to_us(values: list, bad: dict[int, str]) -> pa.Array:
    """RFC3339 text -> int64 µs since the epoch, extra fractional digits truncated (not rounded).

    Arrow's ISO-8601 cast is laxer than RFC3339 (it takes a space for T, no minutes, +0000), so every row's
    shape is checked first with one vectorized regex pass.
    """
    if all(isinstance(v, str) for v in values):
        arr = pa.array(values, pa.string())
        shape_ok = pc.match_substring_regex(arr, _RFC3339_PATTERN)
        if pc.all(shape_ok).as_py():
            try:
                ns = pc.cast(pc.cast(arr, pa.timestamp("ns", tz="UTC")), pa.int64())
                if ns.null_count == 0:
                    return _ns_to_us(ns)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str) and _RFC3339.match(v):
            try:
                ns = pc.cast(pc.cast(pa.array([v]), pa.timestamp("ns", tz="UTC")), pa.int64())[0].as_py()
                out.append(ns // 1000)
                continue
            except (pa.ArrowInvalid, OverflowError):
                pass
        bad.setdefault(i, f"timestamp: not an RFC3339 UTC time ({v!r})")
        out.append(0)
    return pa.array(out, pa.int64())


def _ns_to_us(ns: pa.Array) -> pa.Array:
    arr = ns.to_numpy(zero_copy_only=False)
    return pa.array(np.floor_divide(arr, 1000), pa.int64())


def finalize_trades(
    exchange: str,
    wire_map: dict[str, Instrument],
    raw: RawTrades,
    ts_recv: Sequence[int],
    result: ParseResult,
) -> None:
    """Convert raw columns to a :data:`TRADE_SCHEMA` table; failed rows become dead letters.

    A frame holding several trades keeps its good trades; the frame itself is dead-lettered with the
    reason of its first bad trade.
    """
    n = len(raw.index)
    if n == 0:
        result.trades = TRADE_SCHEMA.empty_table()
        return
    bad: dict[int, str] = dict(raw.reasons)
    index = np.asarray(raw.index, dtype=np.int64)
    recv = np.asarray(ts_recv, dtype=np.int64)[index]

    # instruments: map the few distinct wire symbols once, then gather
    natives = raw.native
    if isinstance(natives, pa.Array):
        native_arr = natives
        uniq = native_arr.unique().to_pylist()
    else:
        uniq = set(natives)
        if all(isinstance(x, str) for x in uniq):
            native_arr = pa.array(natives, pa.string())
        else:
            native_arr = pa.array([x if isinstance(x, str) else "" for x in natives], pa.string())
    known = [x for x in uniq if isinstance(x, str) and x in wire_map]
    key_arr = pa.array(known, pa.string())
    pos = pc.index_in(native_arr, value_set=key_arr)
    if pos.null_count:
        wire = natives if not isinstance(natives, pa.Array) else natives.to_pylist()
        for i in np.flatnonzero(np.asarray(pos.is_null())):
            bad.setdefault(int(i), f"unknown instrument {wire[i]!r}")
    canon = pa.array([wire_map[x].symbol for x in known], pa.string())
    symbol = pc.take(canon, pos)
    native_out = pc.take(pa.array([wire_map[x].native_symbol for x in known], pa.string()), pos)

    trade_id = _int_column(raw.trade_id, "trade_id", pa.uint64(), bad)
    price = _decimal_column(raw.price, "price", bad)
    qty = _decimal_column(raw.qty, "qty", bad)

    if raw.sell is not None:
        # numpy from the fast path, or bools typed by msgspec on the general path
        side = pc.if_else(pa.array(raw.sell, pa.bool_()), "sell", "buy")
    else:
        side_in = pa.array([s if isinstance(s, str) else None for s in raw.side or []], pa.string())
        ok_side = pc.is_in(side_in, value_set=_SIDES)
        if not pc.all(ok_side).as_py():
            for i in np.flatnonzero(~np.asarray(ok_side.fill_null(False))):
                bad.setdefault(int(i), f"side: not buy/sell ({raw.side[i]!r})")
        side = pc.if_else(ok_side.fill_null(False), side_in, "buy")

    if raw.ts_text:
        ts = rfc3339_to_us(raw.ts, bad)
    else:
        ts = _int_column(raw.ts, "ts", pa.int64(), bad)

    # range and sign checks, vectorized
    ts_np = ts.to_numpy(zero_copy_only=False)
    bad_ts = (ts_np < MIN_TS_US) | (ts_np > recv + MAX_AHEAD_US)
    for i in np.flatnonzero(bad_ts):
        bad.setdefault(int(i), f"timestamp out of range ({int(ts_np[i])} µs, received at {int(recv[i])})")
    for name, col in (("price", price), ("qty", qty)):
        pos_ok = pc.greater(col, _ZERO)
        if not pc.all(pos_ok).as_py():
            for i in np.flatnonzero(~np.asarray(pos_ok)):
                # the canonical decimal text, whichever path (and wire spelling) the value came through
                bad.setdefault(int(i), f"{name}: not positive ({canonical_decimal(col[i].as_py())!r})")

    cols = [
        pa.repeat(pa.scalar(exchange, pa.string()), n),
        symbol.fill_null("") if bad else symbol,
        native_out.fill_null("") if bad else native_out,
        trade_id,
        price,
        qty,
        side,
        pa.array(ts_np, pa.int64()).cast(TS_TYPE),
        pa.array(recv, pa.int64()).cast(TS_TYPE),
    ]
    if bad:
        keep = np.ones(n, dtype=bool)
        keep[list(bad)] = False
        seen_frames = {frame for frame, _ in result.dead}  # a frame is dead-lettered once
        for i in sorted(bad):
            frame = int(index[i])
            if frame not in seen_frames:
                seen_frames.add(frame)
                result.dead.append((frame, bad[i]))
        mask = pa.array(keep)
        cols = [c.filter(mask) for c in cols]
    result.trades = pa.Table.from_arrays(cols, schema=TRADE_SCHEMA)


def finalize_parts(
    exchange: str,
    wire_map: dict[str, Instrument],
    parts: Sequence[RawTrades],
    ts_recv: Sequence[int],
    result: ParseResult,
) -> None:
    """:func:`finalize_trades` over several column sets (e.g. WS trades with RFC3339 times and REST trades with
    integer times) of the same batch; ``result.trades`` is their concatenation, in ``parts`` order."""
    tables = []
    for raw in parts:
        if len(raw.index) == 0:
            continue
        finalize_trades(exchange, wire_map, raw, ts_recv, result)
        tables.append(result.trades)
    if not tables:
        result.trades = TRADE_SCHEMA.empty_table()
    else:
        result.trades = tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def scan_then_parse(
    kind: int,
    exchange: str,
    wire_map: dict[str, Instrument],
    frames: Sequence[str | bytes],
    ts_recv: Sequence[int],
    py_parse,
    adv_side_is_maker: bool = True,
) -> ParseResult:
    """Run the C fast path over ``frames``; every frame it does not take goes through ``py_parse``.

    The fast path only takes frames whose every field it fully understands, so results are the same as the
    msgspec path's (tests/venues/test_fast_path.py checks that); it only skips building Python objects.
    """
    if isinstance(frames, pa.ChunkedArray):
        frames = frames.combine_chunks()
    if len(frames) == 0:
        return py_parse([], ts_recv)
    if _scan is None:
        return py_parse(frames.to_pylist() if isinstance(frames, pa.Array) else frames, ts_recv)
    if isinstance(frames, pa.Array):
        if frames.type != pa.string():
            frames = frames.cast(pa.string())
        _, offsets, data = frames.buffers()
        n, fb, idx, sym, symoff, tid, price, qty, sell, ts = _scan.scan_arrow(
            kind, offsets, data if data is not None else b"", len(frames), frames.offset, adv_side_is_maker
        )
    else:
        n, fb, idx, sym, symoff, tid, price, qty, sell, ts = _scan.scan(kind, frames, adv_side_is_maker)
    rest = np.flatnonzero(np.frombuffer(fb, dtype=np.uint8))
    result = ParseResult(trades=None)  # type: ignore[arg-type]
    result.trade_frames = len(frames) - len(rest)
    raw = RawTrades(index=np.frombuffer(idx, dtype=np.int32).astype(np.int64))
    raw.native = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(symoff), pa.py_buffer(sym)])
    raw.trade_id = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(tid)])
    raw.price = pa.Array.from_buffers(DECIMAL_TYPE, n, [None, pa.py_buffer(price)])
    raw.qty = pa.Array.from_buffers(DECIMAL_TYPE, n, [None, pa.py_buffer(qty)])
    raw.sell = np.frombuffer(sell, dtype=np.uint8).astype(bool)
    raw.ts = np.frombuffer(ts, dtype=np.int64)
    finalize_trades(exchange, wire_map, raw, ts_recv, result)
    if len(rest) == 0:
        return result
    if isinstance(frames, pa.Array):
        sub = py_parse([frames[int(i)].as_py() for i in rest], [int(ts_recv[i]) for i in rest])
    else:
        sub = py_parse([frames[i] for i in rest], [ts_recv[i] for i in rest])
    result.merge_counts(sub)
    result.dead.extend((int(rest[i]), reason) for i, reason in sub.dead)
    result.events.extend(ControlEvent(int(rest[e.index]), e.kind, e.detail) for e in sub.events)
    result.events.sort(key=lambda e: e.index)
    result.dead.sort()
    if sub.trades.num_rows:
        result.trades = pa.concat_tables([result.trades, sub.trades]) if result.trades.num_rows else sub.trades
    return result
