"""Kraken WS v2 parser on recorded frames (exchanges.md §2.2-2.4): every normalized field, events, dead letters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from k2.model import Instrument, InstrumentTable, Trade, trades_from_table
from k2.venues.registry import make_parser

#: The documented example trades MATIC/USD, which is not a default pair.
EXTRA = [Instrument.make("kraken", "MATIC/USD", "MATIC", "USD", "MATICUSD")]


def T(symbol: str, native: str, tid: int, price: str, qty: str, side: str, ts: int, ts_recv: int) -> Trade:
    return Trade("kraken", symbol, native, tid, Decimal(price), Decimal(qty), side, ts, ts_recv)


#: frame index in tests/data/frames/kraken.jsonl -> the trades it must give (side = taker side, as sent)
EXPECTED = {
    # documented snapshot example plus two more items: 1e-7 qty, trailing-zero price 0.51460
    4: [
        T("MATIC-USD", "MATIC/USD", 4665846, "0.5147", "6423.46326", "buy", 1695628116925533, 1695632671743000),
        T("MATIC-USD", "MATIC/USD", 4665847, "0.5146", "0.0000001", "sell", 1695628177708706, 1695632671743000),
        T("MATIC-USD", "MATIC/USD", 4665848, "0.5146", "34.6", "buy", 1695628177708706, 1695632671743000),
    ],
    # numbers as 30243.4, integer 30243, 30243.50 / 1.5E-5, 3.02434e4 / 1.00000000; one time with 1 fractional digit;
    # one trade 1 µs ahead of the receive clock (clock skew is allowed)
    5: [
        T("BTC-USD", "BTC/USD", 61044952, "30243.4", "0.34507674", "sell", 1688669597827736, 1688669597900000),
        T("BTC-USD", "BTC/USD", 61044953, "30243", "2", "buy", 1688669597827736, 1688669597900000),
        T("BTC-USD", "BTC/USD", 61044954, "30243.5", "0.000015", "buy", 1688669597900001, 1688669597900000),
        T("BTC-USD", "BTC/USD", 61044955, "30243.4", "1", "sell", 1688669597900000, 1688669597900000),
    ],
    # v1-style XBT / XDG spellings map to the BTC/USD and DOGE/USD instruments
    7: [
        T("BTC-USD", "BTC/USD", 61044956, "30244.1", "0.01", "buy", 1688669598012345, 1688669598100000),
        T("DOGE-USD", "DOGE/USD", 9876543, "0.066815", "12000", "sell", 1688669598054321, 1688669598100000),
    ],
    8: [T("DOGE-USD", "DOGE/USD", 9876544, "0.0668", "150.5", "buy", 1688669598154321, 1688669598200000)],
}

_ACK_BTC = {"channel": "trade", "snapshot": True, "symbol": "BTC/USD"}
_ACK_MATIC = {"channel": "trade", "snapshot": True, "symbol": "MATIC/USD"}
EXPECTED_EVENTS = {
    0: ("status", {"system": "online"}),
    1: ("ack", {"method": "subscribe", "req_id": 1, "result": _ACK_BTC, "error": None}),
    2: ("ack", {"method": "subscribe", "req_id": 1, "result": _ACK_MATIC, "error": None}),
    3: ("subscribe_error", {"method": "subscribe", "req_id": 2, "result": None, "error": "Currency pair not supported XBT/USD"}),
    6: ("heartbeat", {}),
    9: ("pong", {"req_id": 101}),
    10: ("ack", {"method": "unsubscribe", "req_id": 3, "result": {"channel": "trade", "symbol": "BTC/USD"}, "error": None}),
    11: ("status", {"system": "maintenance"}),
    12: ("error", {"error": "Exceeded msg rate"}),
}


@pytest.fixture
def parser():
    return make_parser("kraken", InstrumentTable.default(EXTRA))


@pytest.fixture
def cap(capture):
    c = capture("kraken")
    assert c.exchange == "kraken" and len(c.frames) == 13
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
    assert res.trades.num_rows == 10
    assert res.trade_frames == 4
    assert res.control == 9
    assert res.ignored == 0
    assert [(e.index, e.kind, e.detail) for e in res.events] == [(i, k, d) for i, (k, d) in EXPECTED_EVENTS.items()]


def test_capture_as_bytes_gives_the_same_result(parser, cap, check_trades):
    as_text = parser.parse(cap.frames, cap.ts_recv)
    as_bytes = parser.parse([f.encode("utf-8") for f in cap.frames], cap.ts_recv)
    check_trades(trades_from_table(as_bytes.trades), trades_from_table(as_text.trades))
    assert as_bytes.events == as_text.events and as_bytes.dead == as_text.dead == []


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


def test_documented_example_symbol_is_unknown_with_default_table(cap):
    res = make_parser("kraken", InstrumentTable.default()).parse([cap.frames[4]], [cap.ts_recv[4]])
    assert res.trades.num_rows == 0
    assert res.dead == [(0, "unknown instrument 'MATIC/USD'")], "one dead letter per frame, not per trade"


def test_prices_are_exact_not_float(parser):
    # 0.1 + 0.2 style literals and long mantissas must survive exactly (decimal-preserving JSON parse)
    frame = frame_of(item(price="0.30000000000000004", qty="123456789.123456789012345678"))
    res = parser.parse([frame], [RECV])
    assert res.dead == []
    (t,) = trades_from_table(res.trades)
    assert t.price == Decimal("0.30000000000000004")
    assert t.qty == Decimal("123456789.123456789012345678")


# ---------------------------------------------------------------------------------------------- bad input

RECV = 1688669598200000
GOOD_A = '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":30243.4,"qty":0.34507674,"ord_type":"market","trade_id":61044952,"timestamp":"2023-07-06T18:53:17.827736Z"}]}'
GOOD_B = '{"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","side":"buy","price":1871.25,"qty":2,"ord_type":"limit","trade_id":27519001,"timestamp":"2023-07-06T18:53:18.1Z"}]}'
GOOD_TRADES = [
    T("BTC-USD", "BTC/USD", 61044952, "30243.4", "0.34507674", "sell", 1688669597827736, RECV),
    T("ETH-USD", "ETH/USD", 27519001, "1871.25", "2", "buy", 1688669598100000, RECV),
]


def item(**over) -> str:
    """A trade item for BTC/USD with some fields replaced (value = JSON text) or removed (None)."""
    fields = {"symbol": '"BTC/USD"', "side": '"buy"', "price": "30243.4", "qty": "0.5", "ord_type": '"limit"',
              "trade_id": "61044999", "timestamp": '"2023-07-06T18:53:18.000001Z"'}
    fields.update(over)
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if v is not None) + "}"


def frame_of(*items: str, kind: str = "update") -> str:
    return '{"channel":"trade","type":"%s","data":[%s]}' % (kind, ",".join(items))


def good_item(tid: int) -> str:
    return item(trade_id=str(tid))


def good_trade(tid: int) -> Trade:
    return T("BTC-USD", "BTC/USD", tid, "30243.4", "0.5", "buy", 1688669598000001, RECV)


BAD = [
    ("truncated", GOOD_A[:70], "invalid JSON"),
    ("empty", "", "invalid JSON"),
    ("not-json", "heartbeat", "invalid JSON"),
    ("array", '["trade",1]', "not a JSON object"),
    ("invalid-utf8-in-string", frame_of(item(symbol='"BTC/US\xff"')).encode("latin-1"), "UTF-8"),
    ("missing-price", frame_of(item(price=None)), "bad trade frame: data[0]"),
    ("missing-qty", frame_of(item(qty=None)), "bad trade frame: data[0]"),
    ("missing-trade-id", frame_of(item(trade_id=None)), "bad trade frame: data[0]"),
    ("missing-timestamp", frame_of(item(timestamp=None)), "bad trade frame: data[0]"),
    ("missing-symbol", frame_of(item(symbol=None)), "bad trade frame: data[0]"),
    ("missing-side", frame_of(item(side=None)), "bad trade frame: data[0]"),
    ("price-bool", frame_of(item(price="true")), "bad trade frame: data[0]"),
    ("price-null", frame_of(item(price="null")), "bad trade frame: data[0]"),
    ("price-object", frame_of(item(price='{"v":1}')), "bad trade frame: data[0]"),
    ("price-garbage-text", frame_of(item(price='"abc"')), "bad trade frame: data[0]"),
    ("trade-id-string", frame_of(item(trade_id='"61044999"')), "bad trade frame: data[0]"),
    ("trade-id-float", frame_of(item(trade_id="61044999.5")), "bad trade frame: data[0]"),
    ("trade-id-negative", frame_of(item(trade_id="-1")), "trade_id: not an integer in range"),
    ("timestamp-number", frame_of(item(timestamp="1688669598.000001")), "bad trade frame: data[0]"),
    ("side-null", frame_of(item(side="null")), "bad trade frame: data[0]"),
    ("side-capitalised", frame_of(item(side='"Buy"')), "side: not buy/sell"),
    ("side-v1-letter", frame_of(item(side='"b"')), "side: not buy/sell"),
    ("zero-price", frame_of(item(price="0")), "price: not positive"),
    ("zero-price-float", frame_of(item(price="0.0")), "price: not positive"),
    ("negative-price", frame_of(item(price="-30243.4")), "price: not positive"),
    ("zero-qty", frame_of(item(qty="0")), "qty: not positive"),
    ("negative-qty", frame_of(item(qty="-0.5")), "qty: not positive"),
    ("price-19dp", frame_of(item(price="1.0000000000000000001")), "price: more than 18 decimal places"),
    ("qty-1e-19", frame_of(item(qty="1e-19")), "qty: more than 18 decimal places"),
    ("price-too-large", frame_of(item(price="1e21")), "price: too large"),
    ("time-2008", frame_of(item(timestamp='"2008-12-31T23:59:59.999999Z"')), "timestamp out of range"),
    ("time-epoch", frame_of(item(timestamp='"1970-01-01T00:00:00Z"')), "timestamp out of range"),
    ("time-more-than-a-day-ahead", frame_of(item(timestamp='"2023-07-07T18:53:18.200001Z"')), "timestamp out of range"),
    ("time-year-9999", frame_of(item(timestamp='"9999-07-06T18:53:18.000001Z"')), "timestamp"),
    ("time-space-separator", frame_of(item(timestamp='"2023-07-06 18:53:18.000001Z"')), "timestamp: not an RFC3339"),
    ("time-no-zone", frame_of(item(timestamp='"2023-07-06T18:53:18.000001"')), "timestamp: not an RFC3339"),
    ("time-garbage", frame_of(item(timestamp='"yesterday"')), "timestamp: not an RFC3339"),
    ("time-bad-date", frame_of(item(timestamp='"2023-13-45T18:53:18Z"')), "timestamp"),
    ("time-10-digits", frame_of(item(timestamp='"2023-07-06T18:53:18.0000010000Z"')), "timestamp: not an RFC3339"),
    ("unknown-instrument", frame_of(item(symbol='"FOO/USD"')), "unknown instrument 'FOO/USD'"),
    ("unknown-instrument-dash", frame_of(item(symbol='"BTC-USD"')), "unknown instrument 'BTC-USD'"),
    ("unknown-instrument-rest-name", frame_of(item(symbol='"XXBTZUSD"')), "unknown instrument 'XXBTZUSD'"),
    ("usdt-is-not-usd", frame_of(item(symbol='"BTC/USDT"')), "unknown instrument 'BTC/USDT'"),
    ("item-not-object", frame_of("17"), "bad trade frame: data[0]"),
    ("data-not-array", '{"channel":"trade","type":"update","data":{"symbol":"BTC/USD"}}', "`data` is not an array"),
    ("data-missing", '{"channel":"trade","type":"update"}', "`data` is not an array"),
    ("unknown-type-on-trade-channel", frame_of(item(), kind="delta"), "unknown event type 'delta' on trade channel"),
    ("type-missing-on-trade-channel", '{"channel":"trade","data":[]}', "unknown event type None on trade channel"),
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


# a frame of 3 trades where the middle one is bad: 2 trades kept, the frame dead-lettered once
ONE_OF_THREE = [
    ("schema-missing-price", item(trade_id="61045001", price=None), "bad trade frame: data[1]"),
    ("schema-trade-id-string", item(trade_id='"61045001"'), "bad trade frame: data[1]"),
    ("negative-price", item(trade_id="61045001", price="-1"), "price: not positive"),
    ("zero-qty", item(trade_id="61045001", qty="0"), "qty: not positive"),
    ("19dp", item(trade_id="61045001", qty="0.0000000000000000001"), "more than 18 decimal places"),
    ("unknown-instrument", item(trade_id="61045001", symbol='"FOO/USD"'), "unknown instrument 'FOO/USD'"),
    ("time-2008", item(trade_id="61045001", timestamp='"2008-07-06T18:53:18Z"'), "timestamp out of range"),
    ("time-not-rfc3339", item(trade_id="61045001", timestamp='"2023-07-06"'), "timestamp"),
    ("bad-side", item(trade_id="61045001", side='"s"'), "side: not buy/sell"),
]


@pytest.mark.parametrize(("bad_item", "reason"), [pytest.param(b, r, id=i) for i, b, r in ONE_OF_THREE])
def test_frame_with_one_bad_trade_of_three(parser, check_trades, bad_item, reason):
    frame = frame_of(good_item(61045000), bad_item, good_item(61045002))
    res = parser.parse([GOOD_A, frame, GOOD_B], [RECV] * 3)
    assert len(res.dead) == 1, f"expected the frame dead-lettered once, got {res.dead}"
    assert res.dead[0][0] == 1 and reason in res.dead[0][1], res.dead
    assert res.trade_frames == 3
    check_trades(trades_from_table(res.trades), [*GOOD_TRADES, good_trade(61045000), good_trade(61045002)])


def test_frame_with_two_value_errors_is_dead_lettered_once(parser, check_trades):
    frame = frame_of(item(trade_id="61045000", price="0"), good_item(61045001), item(trade_id="61045002", symbol='"FOO/USD"'))
    res = parser.parse([frame], [RECV])
    assert res.dead == [(0, "price: not positive ('0')")]
    check_trades(trades_from_table(res.trades), [good_trade(61045001)])


GOOD_EDGE = [
    ("price-18dp", item(price="0.000000000000000001"), "0.000000000000000001", "0.5", 1688669598000001),
    ("qty-1e-18", item(qty="1e-18"), "30243.4", "0.000000000000000001", 1688669598000001),
    ("price-integer", item(price="30243"), "30243", "0.5", 1688669598000001),
    ("price-exponent-plus", item(price="3.02434E+4"), "30243.4", "0.5", 1688669598000001),
    ("time-exactly-a-day-ahead", item(timestamp='"2023-07-07T18:53:18.2Z"'), "30243.4", "0.5", RECV + 86_400_000_000),
    ("time-9-digits-truncated", item(timestamp='"2023-07-06T18:53:18.000001999Z"'), "30243.4", "0.5", 1688669598000001),
    ("time-no-fraction", item(timestamp='"2023-07-06T18:53:18Z"'), "30243.4", "0.5", 1688669598000000),
    ("time-utc-offset", item(timestamp='"2023-07-06T20:53:18.000001+02:00"'), "30243.4", "0.5", 1688669598000001),
    ("no-ord-type", item(ord_type=None), "30243.4", "0.5", 1688669598000001),
]


@pytest.mark.parametrize(("frame_item", "price", "qty", "ts"), [pytest.param(*c[1:], id=c[0]) for c in GOOD_EDGE])
def test_edge_values_are_accepted(parser, check_trades, frame_item, price, qty, ts):
    res = parser.parse([frame_of(frame_item)], [RECV])
    assert res.dead == []
    check_trades(trades_from_table(res.trades), [T("BTC-USD", "BTC/USD", 61044999, price, qty, "buy", ts, RECV)])


IGNORED_FRAMES = [
    ("book", '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"checksum":1}]}'),
    ("ticker", '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","last":30243.4}]}'),
    ("instrument", '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[]}}'),
    ("unknown-method", '{"method":"add_order","success":true,"req_id":9}'),
    ("empty-object", "{}"),
]


@pytest.mark.parametrize("frame", [pytest.param(f, id=i) for i, f in IGNORED_FRAMES])
def test_unknown_channels_are_ignored_not_dead(parser, check_trades, frame):
    res = parser.parse([GOOD_A, frame, GOOD_B], [RECV] * 3)
    assert res.dead == []
    assert (res.trade_frames, res.control, res.ignored) == (2, 0, 1)
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


def test_empty_snapshot_is_a_trade_frame_without_trades(parser):
    res = parser.parse([frame_of(kind="snapshot")], [RECV])
    assert res.dead == [] and res.trades.num_rows == 0 and res.trade_frames == 1


def test_many_bad_frames_in_one_batch(parser, check_trades):
    frames = [GOOD_A, *(f for _, f, _ in BAD), GOOD_B]
    res = parser.parse(frames, [RECV] * len(frames))
    assert sorted(i for i, _ in res.dead) == list(range(1, len(BAD) + 1)), "each bad frame exactly one dead letter"
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


# ---------------------------------------------------------------------------------------------- parser bugs


def test_bug_frame_with_schema_error_and_value_error_is_dead_lettered_once(parser, check_trades):
    # data[0] fails the schema (string trade_id), data[1] fails a value check (negative price), data[2] is good
    frame = frame_of(item(trade_id='"x"'), item(trade_id="61045001", price="-1"), good_item(61045002))
    res = parser.parse([GOOD_A, frame, GOOD_B], [RECV] * 3)
    assert [i for i, _ in res.dead] == [1], (
        f"BUG: one frame must give exactly one dead letter, got {res.dead} "
        "(the slow path and finalize_trades each dead-letter the same frame)"
    )
    check_trades(trades_from_table(res.trades), [*GOOD_TRADES, good_trade(61045002)])


def test_bug_text_frame_with_lone_surrogate_is_a_dead_letter(parser, check_trades):
    bad = frame_of(item(symbol='"BTC/US\udcff"'))  # a real lone surrogate in the str, not a JSON escape
    try:
        res = parser.parse([GOOD_A, bad, GOOD_B], [RECV] * 3)
    except UnicodeError as exc:
        pytest.fail(f"BUG: a str frame holding a lone surrogate raises {exc!r} instead of giving a dead letter")
    assert [i for i, _ in res.dead] == [1], res.dead
    check_trades(trades_from_table(res.trades), GOOD_TRADES)


@pytest.mark.parametrize("bad_time", ['"2023-07-06 18:53:18.000001Z"', '"2023-07-06T18Z"', '"2023-07-06T18:53:18.5+0000"'],
                         ids=["space-separator", "hour-only", "offset-without-colon"])
def test_bug_malformed_timestamp_in_a_large_batch_is_a_dead_letter(parser, bad_time):
    # rfc3339_to_us only checks a sample of rows when a batch holds more than 64 trades; Arrow's parser
    # accepts these non-RFC3339 shapes, so an unsampled malformed row slips through. Row 50 of 100 is not sampled.
    items = [good_item(61045000 + n) if n != 50 else item(trade_id=str(61045000 + n), timestamp=bad_time) for n in range(100)]
    res = parser.parse([frame_of(*items)], [RECV])
    assert len(res.dead) == 1 and "timestamp" in res.dead[0][1], (
        f"BUG: malformed timestamp {bad_time} at row 50 of 100 was accepted; dead={res.dead}"
    )
    assert res.trades.num_rows == 99
