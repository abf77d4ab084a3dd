"""The C fast path (k2.venues._scan) changes speed, never results: on every frame, parse() (fast path plus the
msgspec path for what it leaves) and the msgspec path alone give the same trades, dead letters and counts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.capture.reader import read_capture
from k2.capture.synth import write_synthetic_capture
from k2.model import trades_from_table
from k2.venues import base

pytestmark = pytest.mark.skipif(base._scan is None, reason="C fast path not built")

FRAMES = Path(__file__).parents[1] / "data" / "frames"
RECV = 1_784_073_600_500_000


def same(parser, frames, recv=None):
    """``frames`` may be a list or an Arrow array (the capture reader's form): both reach the fast path."""
    recv = [RECV] * len(frames) if recv is None else [int(x) for x in recv]
    as_list = frames.to_pylist() if isinstance(frames, pa.Array) else frames
    fast, slow = parser.parse(frames, recv), parser._parse_py(as_list, recv)
    key = lambda t: (t.exchange, t.symbol, t.trade_id, t.ts)
    assert sorted(trades_from_table(fast.trades), key=key) == sorted(trades_from_table(slow.trades), key=key)
    assert sorted(fast.dead) == sorted(slow.dead)
    assert (fast.trade_frames, fast.control, fast.ignored) == (slow.trade_frames, slow.control, slow.ignored)
    assert [(e.index, e.kind) for e in fast.events] == [(e.index, e.kind) for e in slow.events]
    return fast


def recorded(name):
    return [json.loads(x) for x in (FRAMES / f"{name}.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("exchange", ["binance", "kraken", "coinbase"])
@pytest.mark.parametrize("suffix", ["", "_rest"])
def test_recorded_frames_same_on_both_paths(parsers, exchange, suffix):
    lines = recorded(exchange + suffix)
    same(parsers[exchange], [x["frame"] for x in lines], [x["ts_recv"] for x in lines])


@pytest.mark.parametrize("exchange", ["binance", "kraken", "coinbase"])
def test_recorded_ws_and_rest_frames_interleaved_same_on_both_paths(parsers, exchange):
    ws, rest = recorded(exchange), recorded(f"{exchange}_rest")
    lines = [x for pair in zip(ws, rest) for x in pair] + ws[len(rest) :] + rest[len(ws) :]
    frames = [x["frame"] for x in lines]
    res = same(parsers[exchange], frames, [x["ts_recv"] for x in lines])
    assert sum(e.kind == "rest" for e in res.events) > 0
    # the fast path takes no REST frame: every one of them is left for the general path
    _, fallback, *_ = base._scan.scan(getattr(base._scan, exchange.upper()), frames, True)
    assert all(fallback[i] for i, f in enumerate(frames) if f.startswith('{"rest":'))


def test_synthetic_streams_take_the_fast_path_and_match(tmp_path, parsers):
    cap = tmp_path / "s.jsonl"
    write_synthetic_capture(cap, 6_000, seed=9)
    for chunk in read_capture(cap):
        for exchange, group in chunk.by_exchange.items():
            res = same(parsers[exchange], group.frames, group.ts_recv)
            assert res.trades.num_rows > 0
            # the fast path took every trade frame: nothing was left for the general path but control frames
            _, fallback, *_ = base._scan.scan(getattr(base._scan, exchange.upper()), group.frames.to_pylist(), True)
            assert sum(fallback) == res.control + res.ignored


def dec_text():
    return st.one_of(
        st.from_regex(r"\A[0-9]{1,21}(\.[0-9]{1,20})?\Z"),
        st.sampled_from(["0", "0.0", "00.5", "1.", ".5", "1e5", "1E-7", "-1", "+1", " 1", "1 ", "", "0x1", "1.5.5", "１"]),
    )


BINANCE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]


@st.composite
def binance_frames(draw):
    fields = {
        "e": draw(st.sampled_from(['"trade"', '"aggTrade"', '"trade2"', "1"])),
        "E": "1784073600000",
        "s": draw(st.sampled_from(['"BTCUSDT"', '"ETHUSDT"', '"NOPEUSDT"', '"BTC\\u0055SDT"', "5"])),
        "t": draw(st.sampled_from(["1", "0", "-1", "18446744073709551615", "18446744073709551616", "1.0", '"7"', "1e3"])),
        "p": json.dumps(draw(dec_text())),
        "q": json.dumps(draw(dec_text())),
        "T": draw(st.sampled_from(["1784073600000", "1784073600000123", "0", "42", "9223372036854775807", "9223372036854775808", "-5", '"1784073600000"'])),
        "m": draw(st.sampled_from(["true", "false", "null", '"true"', "1"])),
        "M": "true",
    }
    # Binance's own order half the time: the C path reads that layout as literals, and anything else key by key
    keys = BINANCE_KEYS if draw(st.booleans()) else draw(st.permutations(BINANCE_KEYS))
    keys = [k for k in keys if draw(st.integers(0, 15)) > 0]  # sometimes a key goes missing
    if draw(st.booleans()):
        keys.append(draw(st.sampled_from(["X", "s", "zz"])))  # an extra or duplicate key
        fields.setdefault("X", "[1,{\"a\":null}]")
        fields.setdefault("zz", '"\\u00e9"')
    body = "{" + ",".join(f'"{k}":{fields[k]}' for k in keys) + "}"
    if draw(st.integers(0, 5)) == 0:
        body = body.replace(",", ", ")  # the layout with spaces: read key by key
    if draw(st.booleans()):
        body = f'{{"stream":"btcusdt@trade","data":{body}}}'
    return body


@settings(max_examples=400, deadline=None)
@given(st.lists(binance_frames(), min_size=1, max_size=8))
def test_binance_adversarial_frames_same_on_both_paths(parsers, frames):
    same(parsers["binance"], frames)


@st.composite
def kraken_frames(draw):
    def item():
        fields = {
            "symbol": draw(st.sampled_from(['"BTC/USD"', '"XBT/USD"', '"FOO/USD"'])),
            "side": draw(st.sampled_from(['"buy"', '"sell"', '"BUY"'])),
            "price": draw(st.sampled_from(["30243.4", "0.5147", "1e-7", "12", "0", "-1", '"1.5"', "1.0000000000000000001", "0.00000001"])),
            "qty": draw(st.sampled_from(["6423.46326", "0.00012345", "1", "1E+2"])),
            "ord_type": draw(st.sampled_from(['"limit"', "null", "3"])),
            "trade_id": draw(st.sampled_from(["4665846", "0", "-3", "1.5"])),
            "timestamp": draw(st.sampled_from(['"2026-07-15T00:00:00.123456Z"', '"2026-07-15T00:00:00.1234567Z"', '"2026-07-15T00:00:00Z"',
                                                '"2026-07-15 00:00:00Z"', '"2026-02-30T00:00:00Z"', '"2026-07-15T01:00:00+01:00"', '"2026-07-15T00:00:60Z"'])),
        }
        order = list(fields) if draw(st.booleans()) else draw(st.permutations(list(fields)))  # Kraken's order first
        keys = [k for k in order if draw(st.integers(0, 12)) > 0]
        return "{" + ",".join(f'"{k}":{fields[k]}' for k in keys) + "}"

    items = ",".join(item() for _ in range(draw(st.integers(0, 3))))
    kind = draw(st.sampled_from(['"update"', '"snapshot"', '"bogus"']))
    channel = draw(st.sampled_from(['"trade"', '"heartbeat"']))
    parts = [f'"channel":{channel}', f'"type":{kind}', f'"data":[{items}]']
    parts = draw(st.permutations(parts))
    return "{" + ",".join(parts) + "}"


@settings(max_examples=300, deadline=None)
@given(st.lists(kraken_frames(), min_size=1, max_size=6))
def test_kraken_adversarial_frames_same_on_both_paths(parsers, frames):
    same(parsers["kraken"], frames)


# Coinbase's own order of a `match`, which the C path reads as literals (anything else key by key)
COINBASE_MATCH_KEYS = ["trade_id", "maker_order_id", "taker_order_id", "side", "size", "price", "product_id", "sequence",
                       "time"]


@st.composite
def coinbase_frames(draw):
    def trade_fields(advanced):
        return {
            "trade_id": draw(st.sampled_from(['"699871154"', '"000000011"', '"abc"', "12"] if advanced else ["10", "0", "-1", '"10"'])),
            "product_id": draw(st.sampled_from(['"BTC-USD"', '"ETH-USD"', '"FOO-USD"'])),
            "price": json.dumps(draw(dec_text())),
            "size": draw(st.sampled_from(['"0.3"', '"5.23512"', '"0"', "1"])),
            "side": draw(st.sampled_from(['"BUY"', '"SELL"', '"buy"', '"sell"', '"x"'])),
            "time": draw(st.sampled_from(['"2026-07-15T00:00:00.39625135Z"', '"2026-07-15T00:00:00.265Z"', '"2026-07-15T00:00:00Z"', '"1999-01-01T00:00:00Z"', '"x"'])),
        }

    def joined(f, order):
        return ",".join(f'"{k}":{f[k]}' for k in order if draw(st.integers(0, 12)) > 0)

    def adv_trade():
        f = trade_fields(True)
        return "{" + joined(f, draw(st.permutations(list(f)))) + "}"

    if draw(st.booleans()):
        head = draw(st.sampled_from(['"type":"match"', '"type":"last_match"', '"type":"heartbeat"']))
        f = trade_fields(False)
        if draw(st.booleans()):
            f["maker_order_id"] = draw(st.sampled_from(['"ac928c66"', '"a\\"b"', "null", "7", "{}"]))
            f["taker_order_id"] = '"b"'
            f["sequence"] = draw(st.sampled_from(["50", "-1", "1.5", '"50"']))
            return "{" + head + "," + joined(f, COINBASE_MATCH_KEYS) + "}"
        return "{" + head + "," + joined(f, draw(st.permutations(list(f)))) + ',"sequence":50}'
    events = []
    for _ in range(draw(st.integers(0, 2))):
        trades = ",".join(adv_trade() for _ in range(draw(st.integers(0, 3))))
        events.append('{"type":' + draw(st.sampled_from(['"update"', '"snapshot"', '"delta"'])) + ',"trades":[' + trades + "]}")
    parts = ['"channel":"market_trades"', '"client_id":""', '"sequence_num":' + draw(st.sampled_from(["0", "null", '"1"'])),
             '"events":[' + ",".join(events) + "]"]
    return "{" + ",".join(draw(st.permutations(parts))) + "}"


@settings(max_examples=300, deadline=None)
@given(st.lists(coinbase_frames(), min_size=1, max_size=6), st.booleans())
def test_coinbase_adversarial_frames_same_on_both_paths(instruments, frames, maker):
    from k2.venues.coinbase.parse import CoinbaseParser

    same(CoinbaseParser(instruments, advanced_side_is_maker=maker), frames)


REST_HEADS = {
    "binance": '{"rest":"https://api.binance.com/api/v3/trades?symbol=BTCUSDT","status":200,"body":[]',
    "kraken": '{"rest":"https://api.kraken.com/0/public/Trades?pair=XBTUSD","status":200,'
    '"body":{"error":[],"result":{"XXBTZUSD":[],"last":"1"}}',
    "coinbase": '{"rest":"https://api.exchange.coinbase.com/products/BTC-USD/trades","status":429,'
    '"body":{"message":"Public rate limit exceeded"}',
}


@st.composite
def rest_wrapped(draw, exchange, ws_frames):
    """A WS frame (valid or not) behind a REST envelope head: ``{"rest":..,"status":..,"body":..,<WS keys>}``.
    The old fast path took such frames as WS trades; the msgspec path reads them as REST frames."""
    ws = draw(ws_frames)
    if draw(st.booleans()):
        return ws
    return REST_HEADS[exchange] + ("," + ws[1:] if ws.startswith("{") and not ws.startswith("{}") else "}")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_rest_wrapped_adversarial_frames_same_on_both_paths(parsers, data):
    for exchange, strategy in (("binance", binance_frames()), ("kraken", kraken_frames()), ("coinbase", coinbase_frames())):
        frames = data.draw(st.lists(rest_wrapped(exchange, strategy), min_size=1, max_size=4))
        same(parsers[exchange], frames)
