"""Trade-id continuity per (exchange, symbol), and the gaps it reveals.

All three exchanges number trades contiguously per pair (Binance ``t``, Kraken ``trade_id``, Coinbase
``trade_id``; exchanges.md §5). The tracker remembers the highest id seen per symbol. Ids above it that do not
follow on are a gap: the missing ids become a :class:`Gap` that backfill tries to fill. Ids at or below it
(late frames, REST pages, a Kraken snapshot after a reconnect) fill the open gaps they fall in.

A gap's fate is stored as data (``gaps`` view): ``pending`` when detected; ``filled`` once every missing id was
seen; ``partial`` / ``unfilled`` when backfill gave up with some / all ids still missing, with the reason.

Sources of ids:
  * ``observe_live``: the WebSocket stream. Holes make new gaps.
  * ``observe_rest(..., reconcile=True)``: a REST page fetched after a (re)connect or at start-up, from the last
    id seen. Ids above the last seen one were missed while the stream was down: they make a gap that is filled
    at once, recorded for audit (with whatever ids REST did not return still missing).
  * ``observe_rest(..., reconcile=False)``: a page fetched for known gaps; it only fills them. Ids above the
    last seen one are left to the live stream (they are simply trades that have not arrived yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.hot.chdb_store import GAP_SCHEMA


def now_us() -> int:
    return time.time_ns() // 1000


class RangeSet:
    """Disjoint, sorted, inclusive integer ranges; small (a gap rarely splits into more than a few)."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self.ranges: list[tuple[int, int]] = sorted(ranges or [])

    def __len__(self) -> int:
        return len(self.ranges)

    @property
    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def remove_ids(self, ids: np.ndarray) -> int:
        """Remove the (sorted, unique) ``ids``; returns how many were present."""
        if not self.ranges or len(ids) == 0:
            return 0
        out: list[tuple[int, int]] = []
        removed = 0
        for lo, hi in self.ranges:
            a, b = np.searchsorted(ids, lo, "left"), np.searchsorted(ids, hi, "right")
            inside = ids[a:b]
            if len(inside) == 0:
                out.append((lo, hi))
                continue
            removed += len(inside)
            start = lo
            for v in inside.tolist():
                if v > start:
                    out.append((start, v - 1))
                start = v + 1
            if start <= hi:
                out.append((start, hi))
        self.ranges = out
        return removed


@dataclass
class Gap:
    exchange: str
    symbol: str
    first: int
    last: int
    detected_us: int
    reason: str
    ts_before_us: int = 0  # exchange time of the trade before the gap (0 = unknown)
    ts_after_us: int = 0  # exchange time of the trade after it (0 = unknown)
    missing: RangeSet = field(default_factory=RangeSet)
    recovered: int = 0
    status: str = "pending"

    @property
    def settled(self) -> bool:
        return self.status != "pending"

    def row(self, updated_us: int) -> dict:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "first_missing_id": self.first,
            "last_missing_id": self.last,
            "detected": self.detected_us,
            "status": self.status,
            "missing": self.missing.count,
            "recovered": self.recovered,
            "reason": self.reason,
            "ts_before_gap": self.ts_before_us,
            "ts_after_gap": self.ts_after_us,
            "updated": updated_us,
        }


@dataclass
class SymbolState:
    last_id: int | None = None
    last_ts: int = 0
    gaps: list[Gap] = field(default_factory=list)  # open (pending) gaps, oldest first
    live_since_connect: bool = False  # a live trade arrived since the last (re)connect
    first_live: int | None = None  # the id the live stream was first seen at, when nothing anchored it before


def gap_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return GAP_SCHEMA.empty_table()
    cols = {name: [r[name] for r in rows] for name in GAP_SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=GAP_SCHEMA)


class GapTracker:
    """Per-exchange id continuity. Not thread-safe: used from the feed's event loop only."""

    def __init__(self, exchange: str, clock: Callable[[], int] = now_us) -> None:
        self.exchange = exchange
        self.clock = clock
        self.symbols: dict[str, SymbolState] = {}
        self._rows: list[dict] = []  # gap rows to store, drained by take_rows()
        self.detected = 0
        self.filled = 0
        self.unfilled = 0

    # -- state -------------------------------------------------------------------------------------------
    def state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            st = self.symbols[symbol] = SymbolState()
        return st

    def seed(self, symbol: str, last_id: int, last_ts: int) -> None:
        """Resume from the store: the highest stored id of ``symbol``."""
        st = self.state(symbol)
        if st.last_id is None or last_id > st.last_id:
            st.last_id, st.last_ts = last_id, last_ts

    def mark_reconnect(self) -> None:
        for st in self.symbols.values():
            st.live_since_connect = False

    def open_gaps(self) -> list[Gap]:
        return [g for st in self.symbols.values() for g in st.gaps]

    def take_rows(self) -> pa.Table | None:
        """Gap rows recorded since the last call (to publish with the next batch), or None."""
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        return gap_table(rows)

    # -- observations ------------------------------------------------------------------------------------
    def observe_live(self, trades: pa.Table) -> list[Gap]:
        """Ids of a parsed live batch; returns the new gaps (already recorded as pending)."""
        new: list[Gap] = []
        for symbol, ids, ts in _by_symbol(trades):
            st = self.state(symbol)
            st.live_since_connect = True
            new.extend(self._observe(symbol, st, ids, ts, "live"))
        return new

    def observe_rest(self, symbol: str, ids: np.ndarray, ts: np.ndarray, *, reconcile: bool) -> list[Gap]:
        """Ids (any order) of a REST page for ``symbol``; returns gaps it created (reconcile only)."""
        order = np.argsort(ids, kind="stable")
        ids, ts = ids[order], ts[order]
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        return self._observe(symbol, self.state(symbol), ids[keep], ts[keep], "reconcile" if reconcile else "rest")

    def _observe(self, symbol: str, st: SymbolState, ids: np.ndarray, ts: np.ndarray, source: str) -> list[Gap]:
        if len(ids) == 0:
            return []
        if st.last_id is None:
            if source == "rest":
                return []
            # first sight of this symbol: anchor on the first id (holes after it are still gaps)
            st.last_id, st.last_ts = int(ids[0]) - 1, int(ts[0])
            st.first_live = int(ids[0])
        last = st.last_id
        split = int(np.searchsorted(ids, last, "right"))
        below, above = ids[:split], ids[split:]
        if len(below) and st.gaps:
            self._fill(st, below)
        if len(above) == 0:
            return []
        if source == "rest":
            return []  # newer than anything seen: the live stream will bring them
        new: list[Gap] = []
        now = self.clock()
        if source == "reconcile":
            # everything above the last seen id was missed while the stream was down
            top = int(above[-1])
            gap = Gap(self.exchange, symbol, last + 1, top, now, "", st.last_ts, int(ts[-1]),
                      RangeSet([(last + 1, top)]))
            gap.recovered = gap.missing.remove_ids(above)
            gap.reason = f"missed while disconnected: {gap.recovered} trades recovered from REST after reconnect"
            self.detected += 1
            if gap.missing.count == 0:
                gap.status = "filled"
                self.filled += 1
            else:
                st.gaps.append(gap)  # REST did not return them all: settled by the backfill that asked
            self._rows.append(gap.row(now))
            new.append(gap)
        else:
            prev_ids = np.concatenate(([last], above[:-1]))
            holes = np.flatnonzero(above - prev_ids > 1)
            prev_ts = np.concatenate(([st.last_ts], ts[split:][:-1]))
            above_ts = ts[split:]
            for h in holes.tolist():
                lo, hi = int(prev_ids[h]) + 1, int(above[h]) - 1
                gap = Gap(
                    self.exchange, symbol, lo, hi, now,
                    f"live stream jumped from id {lo - 1} to {hi + 1}",
                    int(prev_ts[h]), int(above_ts[h]), RangeSet([(lo, hi)]),
                )
                st.gaps.append(gap)
                self.detected += 1
                self._rows.append(gap.row(now))
                new.append(gap)
        st.last_id, st.last_ts = int(above[-1]), int(ts[-1])
        return new

    def _fill(self, st: SymbolState, ids: np.ndarray) -> None:
        now = self.clock()
        still: list[Gap] = []
        for gap in st.gaps:
            got = gap.missing.remove_ids(ids)
            if got:
                gap.recovered += got
                if gap.missing.count == 0:
                    gap.status = "filled"
                    if gap.reason.startswith("live"):
                        gap.reason += f"; {gap.recovered} trades recovered"
                    self.filled += 1
                    self._rows.append(gap.row(now))
                    continue
            still.append(gap)
        st.gaps = still

    def anchor(self, symbol: str, head_id: int, head_ts: int) -> Gap | None:
        """The exchange's latest trade when the stream was subscribed (a REST "head" call).

        A stream with nothing stored starts there, so trades missed before its first live trade (a disconnect
        right after subscribing) are a gap too. Returns that gap, if any.
        """
        st = self.state(symbol)
        if st.last_id is None:
            st.last_id, st.last_ts = head_id, head_ts
            return None
        if st.first_live is None or head_id + 1 >= st.first_live:
            return None
        lo, hi = head_id + 1, st.first_live - 1
        st.first_live = None
        now = self.clock()
        gap = Gap(self.exchange, symbol, lo, hi, now, f"first live trade {hi + 1} came after the subscription's head {lo - 1}",
                  head_ts, 0, RangeSet([(lo, hi)]))
        st.gaps.append(gap)
        self.detected += 1
        self._rows.append(gap.row(now))
        return gap

    def note_heartbeat(self, symbol: str, last_trade_id: int) -> Gap | None:
        """An exchange says ``last_trade_id`` was its latest trade: ids beyond ours were lost silently."""
        st = self.state(symbol)
        if st.last_id is None or last_trade_id <= st.last_id:
            return None
        now = self.clock()
        lo, hi = st.last_id + 1, last_trade_id
        gap = Gap(self.exchange, symbol, lo, hi, now,
                  f"heartbeat reports trade {hi}, the stream stopped at {lo - 1}", st.last_ts, 0, RangeSet([(lo, hi)]))
        st.gaps.append(gap)
        st.last_id = hi  # the live trades up to hi will only fill the gap
        self.detected += 1
        self._rows.append(gap.row(now))
        return gap

    def settle(self, gap: Gap, why: str) -> None:
        """Backfill is done with ``gap``: whatever is still missing stays missing, for the reason given."""
        st = self.state(gap.symbol)
        if gap not in st.gaps:
            return  # already filled
        st.gaps.remove(gap)
        gap.status = "unfilled" if gap.recovered == 0 else "partial"
        ranges = ", ".join(f"{lo}..{hi}" if lo != hi else str(lo) for lo, hi in gap.missing.ranges[:5])
        more = f" (+{len(gap.missing) - 5} more ranges)" if len(gap.missing) > 5 else ""
        gap.reason = f"{gap.reason}; still missing {gap.missing.count} trades ({ranges}{more}): {why}"
        self.unfilled += 1
        self._rows.append(gap.row(self.clock()))


def _by_symbol(trades: pa.Table):
    """(symbol, sorted unique ids, their times in µs) per symbol of a trades table."""
    if trades.num_rows == 0:
        return
    sym = trades.column("symbol").combine_chunks()
    enc = pc.dictionary_encode(sym)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    names = enc.dictionary.to_pylist()
    ids = trades.column("trade_id").to_numpy()
    ts = trades.column("ts").cast(pa.int64()).to_numpy()
    order = np.lexsort((ids, codes))
    codes, ids, ts = codes[order], ids[order], ts[order]
    bounds = np.flatnonzero(np.diff(codes)) + 1
    for part in np.split(np.arange(len(codes)), bounds):
        if len(part) == 0:
            continue
        i, t = ids[part], ts[part]
        keep = np.ones(len(i), dtype=bool)
        keep[1:] = i[1:] != i[:-1]
        yield names[int(codes[part[0]])], i[keep], t[keep]
