"""Trade-id continuity: which gaps are detected, filled and settled, with which rows for the `gaps` view."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.model.trade import TRADE_SCHEMA
from k2.venues.feed import rest_frame
from k2.venues.gaps import GapTracker, RangeSet


def trades(rows: list[tuple[str, int]], ts0: int = 1_784_073_600_000_000) -> pa.Table:
    n = len(rows)
    from decimal import Decimal

    return pa.Table.from_pydict(
        {
            "exchange": ["binance"] * n,
            "symbol": [s for s, _ in rows],
            "native_symbol": [s.replace("-", "") for s, _ in rows],
            "trade_id": [i for _, i in rows],
            "price": [Decimal("1.5")] * n,
            "qty": [Decimal("2")] * n,
            "side": ["buy"] * n,
            "ts": [ts0 + i for _, i in rows],
            "ts_recv": [ts0 + i + 5 for _, i in rows],
        },
        schema=TRADE_SCHEMA,
    )


def tracker() -> GapTracker:
    return GapTracker("binance", clock=lambda: 1_800_000_000_000_000)


def rows_of(t: GapTracker) -> list[dict]:
    table = t.take_rows()
    return [] if table is None else table.to_pylist()


def test_contiguous_stream_has_no_gap():
    t = tracker()
    assert t.observe_live(trades([("BTC-USDT", i) for i in range(100, 110)])) == []
    assert t.observe_live(trades([("BTC-USDT", i) for i in range(110, 120)])) == []
    assert t.state("BTC-USDT").last_id == 119 and rows_of(t) == []


def test_jump_and_internal_hole_make_gaps_with_bounds_and_times():
    t = tracker()
    t.observe_live(trades([("BTC-USDT", 100)]))
    gaps = t.observe_live(trades([("BTC-USDT", 105), ("BTC-USDT", 106), ("BTC-USDT", 109)]))
    assert [(g.first, g.last, g.missing.count) for g in gaps] == [(101, 104, 4), (107, 108, 2)]
    ts0 = 1_784_073_600_000_000
    assert gaps[0].ts_before_us == ts0 + 100 and gaps[0].ts_after_us == ts0 + 105
    rows = rows_of(t)
    assert [(r["first_missing_id"], r["last_missing_id"], r["status"], r["missing"]) for r in rows] == [
        (101, 104, "pending", 4),
        (107, 108, "pending", 2),
    ]


def test_late_ids_fill_a_gap_and_duplicates_do_nothing():
    t = tracker()
    t.observe_live(trades([("ETH-USDT", 1), ("ETH-USDT", 5)]))
    rows_of(t)
    t.observe_live(trades([("ETH-USDT", 5), ("ETH-USDT", 3)]))  # a repeat and one late id
    gap = t.state("ETH-USDT").gaps[0]
    assert gap.missing.ranges == [(2, 2), (4, 4)] and gap.recovered == 1 and rows_of(t) == []
    t.observe_rest("ETH-USDT", np.array([4, 2, 2], dtype=np.uint64), np.array([0, 0, 0]), reconcile=False)
    assert t.state("ETH-USDT").gaps == []
    (row,) = rows_of(t)
    assert (row["status"], row["missing"], row["recovered"]) == ("filled", 0, 3)
    assert t.filled == 1 and t.detected == 1


def test_symbols_are_independent_and_first_sight_anchors():
    t = tracker()
    gaps = t.observe_live(trades([("BTC-USDT", 50), ("ETH-USDT", 7), ("BTC-USDT", 51), ("ETH-USDT", 9)]))
    assert [(g.symbol, g.first, g.last) for g in gaps] == [("ETH-USDT", 8, 8)]


def test_seeded_resume_detects_the_downtime():
    t = tracker()
    t.seed("BTC-USDT", 1000, 1_784_073_600_000_999)
    (gap,) = t.observe_live(trades([("BTC-USDT", 1010)]))
    assert (gap.first, gap.last, gap.ts_before_us) == (1001, 1009, 1_784_073_600_000_999)


def test_rest_pages_above_the_stream_do_not_open_gaps_unless_reconciling():
    t = tracker()
    t.seed("BTC-USDT", 100, 0)
    assert t.observe_rest("BTC-USDT", np.array([101, 102], dtype=np.uint64), np.array([1, 2]), reconcile=False) == []
    assert t.state("BTC-USDT").last_id == 100
    (gap,) = t.observe_rest("BTC-USDT", np.array([101, 102, 104], dtype=np.uint64), np.array([1, 2, 4]), reconcile=True)
    assert (gap.first, gap.last, gap.recovered, gap.missing.ranges) == (101, 104, 3, [(103, 103)])
    assert t.state("BTC-USDT").last_id == 104
    t.settle(gap, "REST did not return it")
    rows = rows_of(t)
    assert [r["status"] for r in rows] == ["pending", "partial"]
    assert "still missing 1 trades (103): REST did not return it" in rows[-1]["reason"]


def test_reconcile_that_finds_everything_is_recorded_filled():
    t = tracker()
    t.seed("BTC-USDT", 100, 0)
    (gap,) = t.observe_rest("BTC-USDT", np.array([101, 102], dtype=np.uint64), np.array([1, 2]), reconcile=True)
    assert gap.status == "filled" and t.state("BTC-USDT").gaps == []
    assert [r["status"] for r in rows_of(t)] == ["filled"]


def test_heartbeat_reveals_silent_loss_and_settle_unfilled():
    t = tracker()
    t.observe_live(trades([("BTC-USD", 10)]))
    assert t.note_heartbeat("BTC-USD", 10) is None
    gap = t.note_heartbeat("BTC-USD", 13)
    assert (gap.first, gap.last) == (11, 13)
    assert t.observe_live(trades([("BTC-USD", 14)])) == []  # continues after the reported id
    t.settle(gap, "HTTP 500")
    rows = rows_of(t)
    assert rows[-1]["status"] == "unfilled" and rows[-1]["missing"] == 3 and t.unfilled == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=120), st.integers(1, 20), st.randoms(use_true_random=False))
def test_gaps_cover_exactly_the_ids_never_seen(ids, batch, rnd):
    """Whatever order and batching ids arrive in, open gaps hold exactly the ids between the first and the
    highest seen that never arrived."""
    rnd.shuffle(ids)
    t = tracker()
    for i in range(0, len(ids), batch):
        t.observe_live(trades([("BTC-USDT", x) for x in ids[i : i + batch]]))
    first = min(ids[:batch])  # the first batch's lowest id anchors the symbol
    seen = set(ids)
    expected = {x for x in range(first, max(ids) + 1) if x not in seen}
    missing = {x for g in t.open_gaps() for lo, hi in g.missing.ranges for x in range(lo, hi + 1)}
    # ids below the anchor of the first batch are not gaps (they precede the first sight)
    assert missing == expected


def test_rangeset_remove():
    r = RangeSet([(1, 10), (20, 25)])
    assert r.remove_ids(np.array([1, 5, 10, 21, 30], dtype=np.uint64)) == 4
    assert r.ranges == [(2, 4), (6, 9), (20, 20), (22, 25)] and r.count == 12


def test_rest_frame_keeps_the_body_verbatim():
    body = '[{"id":1,"price":"4.00000100"}]'
    assert rest_frame("https://x/api?a=1", 200, body) == '{"rest":"https://x/api?a=1","status":200,"body":' + body + "}"
    assert rest_frame("u", 502, b"<html>bad gateway</html>") == '{"rest":"u","status":502,"body":"<html>bad gateway</html>"}'
    assert rest_frame("u", 204, "") == '{"rest":"u","status":204,"body":""}'
