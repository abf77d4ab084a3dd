"""Binance spot parser on recorded frames (exchanges.md §1.2-1.5): every normalized field, events, dead letters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from k2.model import Instrument, InstrumentTable, Trade, trades_from_table
from k2.venues.registry import make_parser

#: The documented example trades BNBBTC; it is not a default pair. A Binance listing with a non-ASCII name
#: checks UTF-8 payloads (exchanges.md §1.6).
EXTRA = [
    Instrument.make("binance", "BNBBTC", "BNB", "BTC"),
    Instrument.make("binance", "币安人生USDT", "币安人生", "USDT"),
]


def T(symbol: str, native: str, tid: int, price: str, qty: str, side: str, ts: int, ts_recv: int) -> Trade:
    return Trade("binance", symbol, native, tid, Decimal(price), Decimal(qty), side, ts, ts_recv)


#: frame index in tests/data/frames/binance.jsonl -> the trades it must give
EXPECTED = {
    # documented example, ms connection, m=true => the seller was the aggressor
    1: [T("BNB-BTC", "BNBBTC", 12345, "0.001", "100", "sell", 1672515782136000, 1672515782140512)],
    # 8-dp zero-padded strings; m=false => buy; T (not E) is the trade time
    2: [T("BTC-USDT", "BTCUSDT", 5100000001, "117234.56", "0.0015", "buy", 1753000000122000, 1753000000130001)],
    # combined stream, ms
    3: [T("BTC-USDT", "BTCUSDT", 5100000002, "117200", "0.000001", "sell", 1753000000244000, 1753000000250000)],
    4: [T("ETH-USDT", "ETHUSDT", 2600000001, "3561.42", "12.5", "buy", 1753000000244000, 1753000000250001)],
    # timeUnit=MICROSECOND, combined and raw: T is already µs
    5: [T("BTC-USDT", "BTCUSDT", 5100000003, "117199.99", "0.25", "sell", 1753000000456788, 1753000000460000)],
    6: [T("ETH-USDT", "ETHUSDT", 2600000002, "3561.43", "0.0001", "buy", 1753000000461234, 1753000000470000)],
    # non-ASCII symbol
    16: [T("币安人生-USDT", "币安人生USDT", 77, "0.1234", "1000", "sell", 1753000000589000, 1753000000600000)],
}

#: frame index -> (event kind, detail)
EXPECTED_EVENTS = {
    0: ("ack", {"id": 1, "result": None}),
    7: ("ack", {"id": 3, "result": ["btcusdt@trade"]}),
    8: ("ack", {"id": 2, "result": True}),
    9: ("ack", {"id": "a1b2c3", "result": None}),
    10: ("error", {"code": 0, "msg": "Unknown property", "id": 5}),
    11: ("error", {"code": 1, "msg": "Invalid value type: expected Boolean", "id": None}),
    12: ("error", {"code": 2, "msg": "Invalid request: unknown method", "id": None}),
    13: ("error", {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1", "id": None}),
    17: ("shutdown", {"E": 1770123456789}),
    18: ("shutdown", {"E": 1770123456789}),
}
IGNORED = (14, 15)  # aggTrade raw and combined: own id space, not stored


@pytest.fixture
def parser():
    return make_parser("binance", InstrumentTable.default(EXTRA))


@pytest.fixture
def cap(capture):
    c = capture("binance")
    assert c.exchange == "binance" and len(c.frames) == 19
    return c


def all_expected() -> list[Trade]:
    return [t for ts in EXPECTED.values() for t in ts]


def test_capture_every_trade_field(parser, cap, check_trades, check_schema):
    res = parser.parse(cap.frames, cap.ts_recv)
    check_schema(res.trades)
    check_trades(trades_from_table(res.trades), all_expected())


def test_capture_counts_and_events(parser, cap):
    res = parser.parse(cap.frames, cap.ts_recv)
    assert res.dead == []
    assert res.trades.num_rows == 7
    assert res.trade_frames == 7
    assert res.control == 10
    assert res.ignored == 2
    assert [(e.index, e.kind, e.detail) for e in res.events] == [(i, k, d) for i, (k, d) in EXPECTED_EVENTS.items()]


def test_capture_as_bytes_gives_the_same_result(parser, cap, check_trades):
    as_text = parser.parse(cap.frames, cap.ts_recv)
    as_bytes = parser.parse([f.encode("utf-8") for f in cap.frames], cap.ts_recv)
    check_trades(trades_from_table(as_bytes.trades), trades_from_table(as_text.trades))
    assert as_bytes.events == as_text.events and as_bytes.dead == as_text.dead
    assert (as_bytes.trade_frames, as_bytes.control, as_bytes.ignored) == (7, 10, 2)


@pytest.mark.parametrize("index", sorted(EXPECTED))
def test_each_trade_frame_alone(parser, cap, check_trades, index):
    res = parser.parse([cap.frames[index]], [cap.ts_recv[index]])
    assert res.dead == [] and res.events == []
    assert (res.trade_frames, res.control, res.ignored) == (1, 0, 0)
    check_trades(trades_from_table(res.trades), EXPECTED[index])


@pytest.mark.parametrize("index", sorted(EXPECTED_EVENTS))
def test_control_frames_give_no_trades(parser, cap, check_schema, index):
    res = parser.parse([cap.frames[index]], [cap.ts_recv[index]])
    check_schema(res.trades)
    assert res.trades.num_rows == 0
    assert res.dead == []
    assert (res.trade_frames, res.control, res.ignored) == (0, 1, 0)
    kind, detail = EXPECTED_EVENTS[index]
    assert [(e.index, e.kind, e.detail) for e in res.events] == [(0, kind, detail)]


@pytest.mark.parametrize("index", IGNORED)
def test_agg_trades_are_ignored_not_dead(parser, cap, index):
    res = parser.parse([cap.frames[index]], [cap.ts_recv[index]])
    assert res.trades.num_rows == 0 and res.dead == [] and res.events == []
    assert (res.trade_frames, res.control, res.ignored) == (0, 0, 1)


def test_documented_example_symbol_is_unknown_with_default_table(cap):
    res = make_parser("binance", InstrumentTable.default()).parse([cap.frames[1]], [cap.ts_recv[1]])
    assert res.trades.num_rows == 0
    assert res.dead == [(0, "unknown instrument 'BNBBTC'")]


def test_lower_case_symbol_maps_to_the_instrument(parser, check_trades):
    frame = '{"e":"trade","E":1753000000123,"s":"btcusdt","t":5100000001,"p":"117234.56000000","q":"0.00150000","T":1753000000122,"m":false,"M":true}'
    res = parser.parse([frame], [1753000000130001])
    check_trades(trades_from_table(res.trades), [EXPECTED[2][0]])


def test_old_frames_with_order_ids_still_parse(parser, check_trades):
    # b/a buyer and seller order ids were removed on 2024-06-18; frames that still carry them must parse too
    frame = '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","b":88,"a":50,"T":1672515782136,"m":true,"M":true}'
    res = parser.parse([frame], [1672515782140512])
    check_trades(trades_from_table(res.trades), EXPECTED[1])


def test_side_follows_buyer_is_maker(parser):
    base = '{"e":"trade","E":1753000000123,"s":"BTCUSDT","t":%d,"p":"1.00000000","q":"1.00000000","T":1753000000122,"m":%s,"M":true}'
    res = parser.parse([base % (1, "true"), base % (2, "false")], [1753000000130001] * 2)
    assert [(t.trade_id, t.side) for t in trades_from_table(res.trades)] == [(1, "sell"), (2, "buy")]


# ---------------------------------------------------------------------------------------------- bad input

RECV = 1753000000130001
GOOD_A = '{"e":"trade","E":1753000000123,"s":"BTCUSDT","t":5100000001,"p":"117234.56000000","q":"0.00150000","T":1753000000122,"m":false,"M":true}'
GOOD_B = '{"stream":"ethusdt@trade","data":{"e":"trade","E":1753000000125,"s":"ETHUSDT","t":2600000001,"p":"3561.42000000","q":"12.50000000","T":1753000000124,"m":true,"M":true}}'
GOOD_TRADES = [
    T("BTC-USDT", "BTCUSDT", 5100000001, "117234.56", "0.0015", "buy", 1753000000122000, RECV),
    T("ETH-USDT", "ETHUSDT", 2600000001, "3561.42", "12.5", "sell", 1753000000124000, RECV),
]


def trade(**over) -> str:
    """A raw @trade frame for BTCUSDT with some fields replaced (value = JSON text) or removed (None)."""
    fields = {"e": '"trade"', "E": "1753000000123", "s": '"BTCUSDT"', "t": "5100000009", "p": '"117234.56000000"',
              "q": '"0.00150000"', "T": "1753000000122", "m": "false", "M": "true"}
    fields.update(over)
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if v is not None) + "}"


BAD = [
    ("truncated", GOOD_A[:60], "invalid JSON"),
    ("empty", "", "invalid JSON"),
    ("not-json", "ping", "invalid JSON"),
    ("array", "[1,2,3]", "not a JSON object"),
    ("null", "null", "not a JSON object"),
    ("invalid-utf8-outside-string", b'\xff\xfe{"e":"trade"}', "invalid JSON"),
    ("missing-price", trade(p=None), "bad trade frame"),
    ("missing-qty", trade(q=None), "bad trade frame"),
    ("missing-trade-time", trade(T=None), "bad trade frame"),
    ("missing-symbol", trade(s=None), "bad trade frame"),
    ("missing-trade-id", trade(t=None), "bad trade frame"),
    ("missing-side-flag", trade(m=None), "bad trade frame"),
    ("price-as-number", trade(p="117234.56"), "bad trade frame"),  # §1.3: p/q are strings
    ("qty-as-number", trade(q="0.0015"), "bad trade frame"),
    ("trade-id-as-string", trade(t='"5100000009"'), "bad trade frame"),
    ("side-flag-as-string", trade(m='"true"'), "bad trade frame"),
    ("time-as-string", trade(T='"1753000000122"'), "bad trade frame"),
    ("time-as-float", trade(T="1753000000122.5"), "bad trade frame"),
    ("zero-price", trade(p='"0.00000000"'), "price: not positive"),
    ("negative-price", trade(p='"-117234.56000000"'), "price: not positive"),
    ("zero-qty", trade(q='"0.00000000"'), "qty: not positive"),
    ("negative-qty", trade(q='"-0.00150000"'), "qty: not positive"),
    ("price-not-a-number", trade(p='"abc"'), "price: not a decimal"),
    ("price-empty", trade(p='""'), "price: not a decimal"),
    ("price-nan", trade(p='"NaN"'), "price: not a finite decimal"),
    ("price-infinity", trade(p='"Infinity"'), "price: not a finite decimal"),
    ("price-19dp", trade(p='"0.0000000000000000001"'), "price: more than 18 decimal places"),
    ("qty-19dp", trade(q='"1.0000000000000000001"'), "qty: more than 18 decimal places"),
    ("price-too-large", trade(p='"123456789012345678901.5"'), "price: too large"),
    ("time-2008-ms", trade(T="1230940799999"), "timestamp out of range"),
    ("time-2008-us", trade(T="1230940799999999"), "timestamp out of range"),
    ("time-zero", trade(T="0"), "timestamp out of range"),
    ("time-negative", trade(T="-1"), "timestamp out of range"),
    ("time-more-than-a-day-ahead-ms", trade(T=str((RECV + 86_400_000_000) // 1000 + 1)), "timestamp out of range"),
    ("time-more-than-a-day-ahead-us", trade(T=str(RECV + 86_400_000_001)), "timestamp out of range"),
    ("unknown-instrument", trade(s='"FOOBARUSDT"'), "unknown instrument 'FOOBARUSDT'"),
    ("unknown-instrument-empty", trade(s='""'), "unknown instrument"),
    ("negative-trade-id", trade(t="-1"), "trade_id: not an integer in range"),
    ("trade-id-above-uint64", trade(t=str(2**64)), "trade_id"),
    ("unknown-event-on-trade-stream", '{"stream":"btcusdt@trade","data":{"e":"kline","E":1753000000123,"s":"BTCUSDT"}}',
     "unknown event type 'kline' on trade stream"),
    ("aggtrade-on-trade-stream",
     '{"stream":"btcusdt@trade","data":{"e":"aggTrade","E":1753000000123,"s":"BTCUSDT","a":1,"p":"1.0","q":"1.0","f":1,"l":1,"T":1753000000122,"m":true,"M":true}}',
     "unknown event type 'aggTrade' on trade stream"),
    ("combined-data-not-object", '{"stream":"btcusdt@trade","data":[1,2]}', "combined-stream data is not an object"),
    ("combined-trade-missing-field", '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"q":"1.0","T":1753000000122,"m":true}}',
     "bad trade frame"),
]


@pytest.mark.parametrize(("frame", "reason"), [pytest.param(f, r, id=i) for i, f, r in BAD])
def test_bad_frame_is_one_dead_letter_and_keeps_neighbours(parser, check_trades, frame, reason):
    res = parser.parse([GOOD_A, frame, GOOD_B], [RECV] * 3)
    assert len(res.dead) == 1, f"expected exactly one dead letter, got {res.dead}"
    index, why = res.dead[0]
    assert index == 1
    assert reason in why, f"dead-letter reason {why!r} does not mention {reason!r}"
    assert res.events == [] and res.control == 0
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


GOOD_EDGE = [
    ("price-18dp", trade(p='"0.000000000000000001"'), "0.000000000000000001", "0.0015", 1753000000122000),
    ("exponent-text", trade(p='"1.5E+3"'), "1500", "0.0015", 1753000000122000),
    ("time-exactly-a-day-ahead", trade(T=str(RECV + 86_400_000_000)), "117234.56", "0.0015", RECV + 86_400_000_000),
    ("time-2009-01-03-ms", trade(T="1230940800000"), "117234.56", "0.0015", 1230940800000000),
    ("time-2009-01-03-us", trade(T="1230940800000000"), "117234.56", "0.0015", 1230940800000000),
]


@pytest.mark.parametrize(("frame", "price", "qty", "ts"), [pytest.param(*c[1:], id=c[0]) for c in GOOD_EDGE])
def test_edge_values_are_accepted(parser, check_trades, frame, price, qty, ts):
    res = parser.parse([frame], [RECV])
    assert res.dead == []
    check_trades(trades_from_table(res.trades), [T("BTC-USDT", "BTCUSDT", 5100000009, price, qty, "buy", ts, RECV)])


IGNORED_FRAMES = [
    ("kline-raw", '{"e":"kline","E":1753000000123,"s":"BTCUSDT","k":{"t":1753000000000}}'),
    ("kline-combined", '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1753000000123,"s":"BTCUSDT"}}'),
    ("depth-combined", '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1753000000123,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'),
    ("empty-object", "{}"),
]


@pytest.mark.parametrize("frame", [pytest.param(f, id=i) for i, f in IGNORED_FRAMES])
def test_unknown_message_types_are_ignored_not_dead(parser, check_trades, frame):
    res = parser.parse([GOOD_A, frame, GOOD_B], [RECV] * 3)
    assert res.dead == []
    assert (res.trade_frames, res.control, res.ignored) == (2, 0, 1)
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


def test_many_bad_frames_in_one_batch(parser, check_trades):
    frames = [GOOD_A, *(f for _, f, _ in BAD), GOOD_B]
    res = parser.parse(frames, [RECV] * len(frames))
    assert sorted(i for i, _ in res.dead) == list(range(1, len(BAD) + 1)), "each bad frame exactly one dead letter"
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


# ---------------------------------------------------------------------------------------------- parser bugs


def test_invalid_utf8_inside_a_string_is_a_dead_letter(parser, check_trades):
    bad = b'{"e":"trade","E":1753000000123,"s":"BTC\xffUSDT","t":5100000009,"p":"1.0","q":"1.0","T":1753000000122,"m":true,"M":true}'
    try:
        res = parser.parse([GOOD_A.encode(), bad, GOOD_B.encode()], [RECV] * 3)
    except UnicodeError as exc:  # pragma: no cover - regression guard
        pytest.fail(f"BUG: invalid UTF-8 inside a JSON string raises {exc!r} instead of giving a dead letter")
    assert len(res.dead) == 1 and res.dead[0][0] == 1, res.dead
    assert "UTF-8" in res.dead[0][1] or "invalid JSON" in res.dead[0][1], res.dead
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


def test_bug_text_frame_with_lone_surrogate_is_a_dead_letter(parser, check_trades):
    # e.g. a capture line decoded with errors="surrogateescape": a str that cannot be encoded as UTF-8
    bad = trade(s='"BTC\udcffUSDT"')  # a real lone surrogate in the str, not a JSON escape
    assert "\udcff" in bad
    try:
        res = parser.parse([GOOD_A, bad, GOOD_B], [RECV] * 3)
    except UnicodeError as exc:
        pytest.fail(f"BUG: a str frame holding a lone surrogate raises {exc!r} instead of giving a dead letter")
    assert [i for i, _ in res.dead] == [1], res.dead
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


@pytest.mark.parametrize("t_value", [2**63 - 1, 2**63, 2**64 - 1], ids=["int64-max", "2^63", "uint64-max"])
def test_bug_huge_trade_time_is_a_dead_letter(parser, check_trades, t_value):
    try:
        res = parser.parse([GOOD_A, trade(T=str(t_value)), GOOD_B], [RECV] * 3)
    except OverflowError as exc:  # pragma: no cover - the bug
        pytest.fail(f"BUG: T={t_value} raises {exc!r} instead of giving a dead letter")
    assert [i for i, _ in res.dead] == [1], res.dead
    check_trades(trades_from_table(res.trades), GOOD_TRADES)
