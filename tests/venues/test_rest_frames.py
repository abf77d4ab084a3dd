"""REST-response frames of the backfill endpoints (exchanges.md §1.7, §2.6, §3.5; envelope in k2/venues/rest.py).

Recorded frames in tests/data/frames/<exchange>_rest.jsonl: every normalized field of every trade, the ``rest`` and
``rest_error`` events, and dead letters (with their reasons) for malformed envelopes and items.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from k2.model import Instrument, InstrumentTable, Trade, trades_from_table
from k2.venues import base
from k2.venues.registry import make_parser

R = 1784073600500000  # receive time of the inline frames (2026-07-15T00:00:00.5Z)


def T(exchange: str, symbol: str, native: str, tid: int, price: str, qty: str, side: str, ts: int, ts_recv: int) -> Trade:
    return Trade(exchange, symbol, native, tid, Decimal(price), Decimal(qty), side, ts, ts_recv)


def B(tid, price, qty, side, ts, ts_recv, symbol="BTC-USDT", native="BTCUSDT"):
    return T("binance", symbol, native, tid, price, qty, side, ts, ts_recv)


def K(tid, price, qty, side, ts, ts_recv, symbol="BTC-USD", native="BTC/USD"):
    return T("kraken", symbol, native, tid, price, qty, side, ts, ts_recv)


def C(tid, price, qty, side, ts, ts_recv, symbol="BTC-USD"):
    return T("coinbase", symbol, symbol, tid, price, qty, side, ts, ts_recv)


# ---------------------------------------------------------------- expected results of the recorded frames

#: binance_rest.jsonl frame index -> trades. isBuyerMaker true => the seller was the aggressor.
BINANCE = {
    # historicalTrades, ms times, 8-dp padded strings
    0: [
        B(5123456789, "117234.56", "0.0015", "sell", 1784073599123000, 1784073600200000),
        B(5123456790, "117234.57", "0.012", "buy", 1784073599123000, 1784073600200000),
        B(5123456791, "117200", "1", "buy", 1784073599456000, 1784073600200000),
    ],
    # /trades requested with X-MBX-TIME-UNIT: MICROSECOND: time is already µs
    1: [
        B(2345678901, "3456.78", "0.25", "buy", 1784073599987654, 1784073600300000, "ETH-USDT", "ETHUSDT"),
        B(2345678902, "3456.77", "2.5", "sell", 1784073599999001, 1784073600300000, "ETH-USDT", "ETHUSDT"),
    ],
    # the documented item
    2: [B(28457, "4.000001", "12", "sell", 1499865549590000, 1784073600400000)],
    # market-data host (ignored), pretty-printed body
    3: [
        B(987654321, "0.16543", "1500", "sell", 1784073600012000, 1784073600500000, "DOGE-USDT", "DOGEUSDT"),
        B(987654322, "0.16544", "0.1", "buy", 1784073600013000, 1784073600500000, "DOGE-USDT", "DOGEUSDT"),
    ],
}
_H = "/api/v3/historicalTrades"
BINANCE_EVENTS = {
    0: ("rest", {"endpoint": _H, "items": 3, "last": None}),
    1: ("rest", {"endpoint": "/api/v3/trades", "items": 2, "last": None}),
    2: ("rest", {"endpoint": _H, "items": 1, "last": None}),
    3: ("rest", {"endpoint": "/api/v3/trades", "items": 2, "last": None}),
    4: ("rest", {"endpoint": _H, "items": 0, "last": None}),
    5: ("rest_error", {"status": 429, "error": "code -1003: Too much request weight used; current limit is 6000 request "
                       "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."}),
    6: ("rest_error", {"status": 418, "error": "code -1003: Way too much request weight used; IP banned until "
                       "1784073720000. Please use WebSocket Streams for live updates to avoid bans."}),
    7: ("rest_error", {"status": 400, "error": "code -1121: Invalid symbol."}),
    8: ("rest_error", {"status": 502, "error": "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                       "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>"}),
    9: ("rest_error", {"status": 500, "error": "HTTP 500"}),
}

#: kraken_rest.jsonl. Times are float-seconds literals read exactly and truncated to µs; b/s is the taker side;
#: the instrument comes from ``pair`` (XBTUSD, XDGUSD, ETHUSD), never from the result key (XXBTZUSD, XETHZUSD).
KRAKEN = {
    0: [
        K(61044952, "30243.4", "0.34507674", "buy", 1688669597827736, 1688671970100000),  # .8277369: 7 decimals
        K(61044953, "30243.5", "0.0015", "sell", 1688669597900123, 1688671970100000),  # .9001234
        K(61044954, "30244.1", "1", "buy", 1688669598012300, 1688671970100000),  # .0123
        K(61044955, "30244", "2.5", "sell", 1688669598100000, 1688671970100000),  # .1
    ],
    1: [
        K(98765432, "0.16543", "12000", "sell", 1784073591123456, 1784073600200000, "DOGE-USD", "DOGE/USD"),
        K(98765433, "0.16544", "150.5", "buy", 1784073592000001, 1784073600200000, "DOGE-USD", "DOGE/USD"),
    ],
    2: [K(87654321, "3456.78", "0.25", "buy", 1784073599987654, 1784073600300000, "ETH-USD", "ETH/USD")],
}
_KT = "/0/public/Trades"
KRAKEN_EVENTS = {
    0: ("rest", {"endpoint": _KT, "items": 4, "last": "1688669598100000000"}),
    1: ("rest", {"endpoint": _KT, "items": 2, "last": "1784073592000001000"}),
    2: ("rest", {"endpoint": _KT, "items": 1, "last": "1784073599987654300"}),
    3: ("rest", {"endpoint": _KT, "items": 0, "last": "1784073599000000000"}),
    4: ("rest_error", {"status": 200, "error": "EGeneral:Too many requests"}),
    5: ("rest_error", {"status": 200, "error": "EQuery:Unknown asset pair"}),
    6: ("rest_error", {"status": 429, "error": "EGeneral:Too many requests"}),
    7: ("rest_error", {"status": 500, "error": "Internal Server Error"}),
}

#: coinbase_rest.jsonl. ``side`` is the maker side: the aggressor is the opposite. Newest first.
COINBASE = {
    0: [
        C(912345680, "117210.01", "0.005", "buy", 1784073599987654, 1784073600200000),  # 6 fractional digits
        C(912345679, "117210", "0.12", "sell", 1784073599987650, 1784073600200000),  # 5
        C(912345678, "117209.5", "1", "sell", 1784073598123000, 1784073600200000),  # 3
        C(912345677, "117209", "0.00001", "buy", 1784073598000000, 1784073600200000),  # none
        C(912345676, "117208.99", "0.31", "buy", 1784073597123456, 1784073600200000),  # 9, truncated
    ],
    1: [
        C(201234567, "0.16543", "1500", "sell", 1784073599500010, 1784073600300000, "DOGE-USD"),
        C(201234566, "0.16544", "2", "buy", 1784073599100000, 1784073600300000, "DOGE-USD"),
    ],
    # the documented item
    2: [C(3, "370", "0.01", "sell", 1417415048666679, 1784073600400000)],
}
COINBASE_EVENTS = {
    0: ("rest", {"endpoint": "/products/BTC-USD/trades", "items": 5, "last": None}),
    1: ("rest", {"endpoint": "/products/DOGE-USD/trades", "items": 2, "last": None}),
    2: ("rest", {"endpoint": "/products/BTC-USD/trades", "items": 1, "last": None}),
    3: ("rest", {"endpoint": "/products/BTC-USD/trades", "items": 0, "last": None}),
    4: ("rest_error", {"status": 429, "error": "Public rate limit exceeded"}),
    5: ("rest_error", {"status": 404, "error": "NotFound"}),
    6: ("rest_error", {"status": 500, "error": "Internal server error"}),
    7: ("rest_error", {"status": 504, "error": "upstream request timeout"}),
}

CASES = {
    "binance": (BINANCE, BINANCE_EVENTS, 10),
    "kraken": (KRAKEN, KRAKEN_EVENTS, 8),
    "coinbase": (COINBASE, COINBASE_EVENTS, 8),
}
VENUES = sorted(CASES)


@pytest.fixture(scope="module")
def table():
    return InstrumentTable.default()


def parser_for(exchange: str, table=None):
    return make_parser(exchange, table or InstrumentTable.default())


def load(capture, exchange):
    c = capture(f"{exchange}_rest")
    assert c.exchange == exchange and len(c.frames) == CASES[exchange][2]
    assert set(c.conns) == {"rest"} and all(f.startswith('{"rest":') for f in c.frames)
    return c


def flat(expected: dict) -> list[Trade]:
    return [t for ts in expected.values() for t in ts]


# ---------------------------------------------------------------- recorded frames


@pytest.mark.parametrize("exchange", VENUES)
def test_capture_every_trade_field(capture, check_trades, check_schema, exchange):
    cap = load(capture, exchange)
    res = parser_for(exchange).parse(cap.frames, cap.ts_recv)
    check_schema(res.trades)
    check_trades(trades_from_table(res.trades), flat(CASES[exchange][0]))


@pytest.mark.parametrize("exchange", VENUES)
def test_capture_counts_and_events(capture, exchange):
    cap = load(capture, exchange)
    expected, events, _ = CASES[exchange]
    res = parser_for(exchange).parse(cap.frames, cap.ts_recv)
    assert res.dead == []
    assert res.trades.num_rows == len(flat(expected))
    n_rest = sum(1 for k, _ in events.values() if k == "rest")
    assert (res.trade_frames, res.control, res.ignored) == (n_rest, len(events) - n_rest, 0)
    assert [(e.index, e.kind, e.detail) for e in res.events] == [(i, k, d) for i, (k, d) in events.items()]


@pytest.mark.parametrize("exchange", VENUES)
def test_capture_as_bytes_and_on_the_general_path_gives_the_same_result(capture, check_trades, exchange):
    cap = load(capture, exchange)
    p = parser_for(exchange)
    as_text = p.parse(cap.frames, cap.ts_recv)
    for other in (p.parse([f.encode("utf-8") for f in cap.frames], cap.ts_recv), p._parse_py(cap.frames, cap.ts_recv)):
        check_trades(trades_from_table(other.trades), trades_from_table(as_text.trades))
        assert other.events == as_text.events and other.dead == as_text.dead == []
        assert (other.trade_frames, other.control, other.ignored) == (as_text.trade_frames, as_text.control, 0)


@pytest.mark.parametrize(("exchange", "index"), [(e, i) for e in VENUES for i in sorted(CASES[e][1])])
def test_each_frame_alone(capture, check_trades, check_schema, exchange, index):
    cap = load(capture, exchange)
    expected, events, _ = CASES[exchange]
    res = parser_for(exchange).parse([cap.frames[index]], [cap.ts_recv[index]])
    check_schema(res.trades)
    kind, detail = events[index]
    assert [(e.index, e.kind, e.detail) for e in res.events] == [(0, kind, detail)]
    assert res.dead == [] and res.ignored == 0
    if kind == "rest":
        assert (res.trade_frames, res.control) == (1, 0)
        check_trades(trades_from_table(res.trades), expected.get(index, []))
    else:  # an error answer: no trades, a control frame, not a dead letter
        assert (res.trade_frames, res.control) == (0, 1)
        assert res.trades.num_rows == 0


_WS_EXTRA = {  # the non-default pairs of the WS captures
    "binance": [Instrument.make("binance", "BNBBTC", "BNB", "BTC"), Instrument.make("binance", "币安人生USDT", "币安人生", "USDT")],
    "kraken": [Instrument.make("kraken", "MATIC/USD", "MATIC", "USD", "MATICUSD")],
    "coinbase": [],
}


@pytest.mark.parametrize("exchange", VENUES)
def test_rest_frames_mixed_with_ws_frames(capture, check_trades, exchange):
    """A replay holds both kinds interleaved; each trade keeps its own frame's receive time."""
    ws, rest = capture(exchange), load(capture, exchange)
    table = InstrumentTable.default(_WS_EXTRA[exchange])
    p = parser_for(exchange, table)
    frames, recv, origin = [], [], []
    for n in range(max(len(ws.frames), len(rest.frames))):
        for src, tag in ((ws, "ws"), (rest, "rest")):
            if n < len(src.frames):
                frames.append(src.frames[n])
                recv.append(src.ts_recv[n])
                origin.append((tag, n))
    both = p.parse(frames, recv)
    alone_ws, alone_rest = p.parse(ws.frames, ws.ts_recv), p.parse(rest.frames, rest.ts_recv)
    check_trades(trades_from_table(both.trades), trades_from_table(alone_ws.trades) + flat(CASES[exchange][0]))
    assert both.dead == [] == alone_ws.dead
    assert both.trade_frames == alone_ws.trade_frames + alone_rest.trade_frames
    assert both.control == alone_ws.control + alone_rest.control
    assert both.ignored == alone_ws.ignored
    shifted = {("ws", e.index): (e.kind, e.detail) for e in alone_ws.events}
    shifted.update({("rest", e.index): (e.kind, e.detail) for e in alone_rest.events})
    assert [(origin[e.index], e.kind, e.detail) for e in both.events] == [
        (o, *shifted[o]) for o in origin if o in shifted
    ]


# ---------------------------------------------------------------- envelope and request checks (all venues)

URLS = {
    "binance": "https://api.binance.com/api/v3/historicalTrades?symbol=BTCUSDT&fromId=5123456789&limit=1000",
    "kraken": "https://api.kraken.com/0/public/Trades?pair=XBTUSD&since=1784073599000000000&count=1000",
    "coinbase": "https://api.exchange.coinbase.com/products/BTC-USD/trades?after=912345681&limit=1000",
}
BODIES = {  # one good trade each: (body JSON, the trade it gives at receive time R)
    "binance": (
        '[{"id":5123456789,"price":"117234.56000000","qty":"0.00150000","quoteQty":"175.85184000","time":1784073599123,'
        '"isBuyerMaker":true,"isBestMatch":true}]',
        B(5123456789, "117234.56", "0.0015", "sell", 1784073599123000, R),
    ),
    "kraken": (
        '{"error":[],"result":{"XXBTZUSD":[["117234.50000","0.00150000",1784073599.1234567,"s","m","",91234567]],'
        '"last":"1784073599123456700"}}',
        K(91234567, "117234.5", "0.0015", "sell", 1784073599123456, R),
    ),
    "coinbase": (
        '[{"time":"2026-07-14T23:59:59.12345Z","trade_id":912345680,"price":"117210.01000000","size":"0.00500000",'
        '"side":"sell"}]',
        C(912345680, "117210.01", "0.005", "buy", 1784073599123450, R),
    ),
}


ENDPOINTS = {"binance": "/api/v3/historicalTrades", "kraken": "/0/public/Trades", "coinbase": "/products/BTC-USD/trades"}
LASTS = {"binance": None, "kraken": "1784073599123456700", "coinbase": None}


def frame(exchange: str, status: int = 200, body: str | None = None, url: str | None = None) -> str:
    return (
        f'{{"rest":{json.dumps(url or URLS[exchange])},"status":{status},"body":{BODIES[exchange][0] if body is None else body}}}'
    )


def parse_both(p, frames, recv=None):
    """parse() (C fast path where built) and the msgspec path alone must agree; returns parse()'s result."""
    recv = [R] * len(frames) if recv is None else recv
    fast, slow = p.parse(frames, recv), p._parse_py(frames, recv)
    assert trades_from_table(fast.trades) == trades_from_table(slow.trades)
    assert fast.dead == slow.dead and fast.events == slow.events
    assert (fast.trade_frames, fast.control, fast.ignored) == (slow.trade_frames, slow.control, slow.ignored)
    return fast


def good_neighbour(exchange):
    return frame(exchange), BODIES[exchange][1]


ENVELOPE_CASES = [
    ('{"rest":"https://api.binance.com/api/v3/trades?symbol=BTCUSDT","status":200,"body":[', "invalid JSON: Input data was truncated"),
    ('{"rest":"{url}","status":200}', "REST frame: missing `body`"),
    ('{"rest":"{url}","body":[]}', "REST frame: missing `status`"),
    ('{"status":200,"body":[]}', "REST frame: missing `rest`"),
    ('{"body":"Internal Server Error"}', "REST frame: missing `rest`"),
    ('{"rest":5,"status":200,"body":[]}', "REST frame: `rest` is not a string (5)"),
    ('{"rest":null,"status":200,"body":[]}', "REST frame: `rest` is not a string (None)"),
    ('{"rest":"{url}","status":"200","body":[]}', "REST frame: `status` is not an integer ('200')"),
    ('{"rest":"{url}","status":200.0,"body":[]}', "REST frame: `status` is not an integer (200.0)"),
    ('{"rest":"{url}","status":true,"body":[]}', "REST frame: `status` is not an integer (True)"),
    ('{"rest":"{url}","status":99,"body":[]}', "REST frame: `status` is not an HTTP status code (99)"),
    ('{"rest":"{url}","status":600,"body":[]}', "REST frame: `status` is not an HTTP status code (600)"),
    ('{"rest":"http://[::1/x","status":200,"body":[]}', "REST frame: `rest` is not a URL ('http://[::1/x': Invalid IPv6 URL)"),
]


@pytest.mark.parametrize("exchange", VENUES)
@pytest.mark.parametrize(("template", "reason"), ENVELOPE_CASES)
def test_malformed_envelope_is_one_dead_letter(check_trades, exchange, template, reason):
    bad = template.replace("{url}", URLS[exchange])
    good, trade = good_neighbour(exchange)
    res = parse_both(parser_for(exchange), [good, bad, good])
    assert res.dead == [(1, reason)]
    assert [(e.index, e.kind) for e in res.events] == [(0, "rest"), (2, "rest")]
    assert (res.trade_frames, res.control, res.ignored) == (2, 0, 0)
    check_trades(trades_from_table(res.trades), [trade, trade])


REQUEST_CASES = {
    "binance": [
        ("https://api.binance.com/api/v3/aggTrades?symbol=BTCUSDT&fromId=1", "REST frame: unknown endpoint '/api/v3/aggTrades'"),
        ("https://api.binance.com/api/v3/historicalTrades/?symbol=BTCUSDT", "REST frame: unknown endpoint '/api/v3/historicalTrades/'"),
        ("https://api.binance.com/api/v3/trades?limit=1000",
         "REST frame: no `symbol` parameter in 'https://api.binance.com/api/v3/trades?limit=1000'"),
        ("https://api.binance.com/api/v3/trades?symbol=BTCUSDT&symbol=ETHUSDT",
         "REST frame: `symbol` given 2 times in 'https://api.binance.com/api/v3/trades?symbol=BTCUSDT&symbol=ETHUSDT'"),
        ("https://api.binance.com/api/v3/trades?symbol=PEPEUSDT", "REST frame: unknown symbol 'PEPEUSDT'"),
        ("https://api.binance.com/api/v3/trades?symbol=BTC-USDT", "REST frame: unknown symbol 'BTC-USDT'"),
    ],
    "kraken": [
        ("https://api.kraken.com/0/public/OHLC?pair=XBTUSD", "REST frame: unknown endpoint '/0/public/OHLC'"),
        ("https://api.kraken.com/0/public/trades?pair=XBTUSD", "REST frame: unknown endpoint '/0/public/trades'"),
        ("https://api.kraken.com/0/public/Trades?since=1",
         "REST frame: no `pair` parameter in 'https://api.kraken.com/0/public/Trades?since=1'"),
        # the result key, the WS name, another case: only the rest_symbol column matches
        ("https://api.kraken.com/0/public/Trades?pair=XXBTZUSD", "REST frame: unknown pair 'XXBTZUSD'"),
        ("https://api.kraken.com/0/public/Trades?pair=BTC%2FUSD", "REST frame: unknown pair 'BTC/USD'"),
        ("https://api.kraken.com/0/public/Trades?pair=xbtusd", "REST frame: unknown pair 'xbtusd'"),
        ("https://api.kraken.com/0/public/Trades?pair=MATICUSD", "REST frame: unknown pair 'MATICUSD'"),
    ],
    "coinbase": [
        ("https://api.exchange.coinbase.com/products/BTC-USD/ticker", "REST frame: unknown endpoint '/products/BTC-USD/ticker'"),
        ("https://api.coinbase.com/api/v3/brokerage/market/products/BTC-USD/ticker?limit=10",
         "REST frame: unknown endpoint '/api/v3/brokerage/market/products/BTC-USD/ticker'"),
        ("https://api.exchange.coinbase.com/products//trades", "REST frame: unknown endpoint '/products//trades'"),
        ("https://api.exchange.coinbase.com/products/FOO-USD/trades", "REST frame: unknown product 'FOO-USD'"),
        ("https://api.exchange.coinbase.com/products/btc-usd/trades", "REST frame: unknown product 'btc-usd'"),
        ("https://api.exchange.coinbase.com/products/BTC-USDT/trades", "REST frame: unknown product 'BTC-USDT'"),
    ],
}


@pytest.mark.parametrize(("exchange", "url", "reason"), [(e, u, r) for e, cases in REQUEST_CASES.items() for u, r in cases])
@pytest.mark.parametrize("status", [200, 429])
def test_unattributable_request_is_a_dead_letter(check_trades, exchange, url, reason, status):
    """K2 cannot tell which instrument it asked for: dead letter, whatever the answer was."""
    good, trade = good_neighbour(exchange)
    res = parse_both(parser_for(exchange), [frame(exchange, status, url=url), good])
    assert res.dead == [(0, reason)]
    assert [(e.index, e.kind) for e in res.events] == [(1, "rest")]
    check_trades(trades_from_table(res.trades), [trade])


@pytest.mark.parametrize("exchange", VENUES)
def test_host_and_scheme_are_ignored_and_key_order_is_free(check_trades, exchange):
    """A relative URL, another host, keys out of K2's order or leading blanks: still the same REST frame."""
    body, trade = BODIES[exchange]
    url = URLS[exchange]
    path = url[url.index("/", len("https://")) :]
    frames = [
        frame(exchange, url="http://127.0.0.1:8080" + path),
        frame(exchange, url=path),
        f'{{"status":200,"body":{body},"rest":{json.dumps(url)}}}',
        f' {{"rest":{json.dumps(url)},"status":200,"body":{body}}}',
        f'{{"rest":{json.dumps(url)}, "status":200, "body":{body}, "headers":{{"x":1}}}}',
    ]
    res = parse_both(parser_for(exchange), frames)
    assert res.dead == []
    assert [(e.index, e.kind, e.detail["endpoint"]) for e in res.events] == [(i, "rest", path.split("?")[0]) for i in range(5)]
    check_trades(trades_from_table(res.trades), [trade] * 5)


@pytest.mark.parametrize("exchange", VENUES)
def test_rest_frame_with_ws_trade_keys_is_read_as_rest(exchange):
    """The fast path must not take a frame starting with {"rest":, even if it also looks like a WS trade."""
    ws_keys = {
        "binance": '"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1784073600000,"m":true',
        "kraken": '"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,'
        '"trade_id":1,"timestamp":"2026-07-15T00:00:00Z"}]',
        "coinbase": '"type":"match","trade_id":1,"product_id":"BTC-USD","price":"1","size":"1","side":"buy",'
        '"time":"2026-07-15T00:00:00Z"',
    }[exchange]
    empty = {"binance": "[]", "kraken": '{"error":[],"result":{"XXBTZUSD":[],"last":"1"}}', "coinbase": "[]"}[exchange]
    f = f'{{"rest":{json.dumps(URLS[exchange])},"status":200,"body":{empty},{ws_keys}}}'
    if base._scan is not None:
        n, fallback, *_ = base._scan.scan(getattr(base._scan, exchange.upper()), [f, f.encode()], True)
        assert n == 0 and list(fallback) == [1, 1]
    res = parse_both(parser_for(exchange), [f])
    assert res.trades.num_rows == 0 and res.dead == []
    assert [(e.kind, e.detail["items"]) for e in res.events] == [("rest", 0)]


# ---------------------------------------------------------------- error answers


@pytest.mark.parametrize(
    ("exchange", "status", "body", "error"),
    [
        ("binance", 429, '{"code":-1003,"msg":"Too many requests; current limit is 6000 request weight per 1 MINUTE."}',
         "code -1003: Too many requests; current limit is 6000 request weight per 1 MINUTE."),
        ("binance", 200, '{"code":-1121,"msg":"Invalid symbol."}', "code -1121: Invalid symbol."),
        ("binance", 500, '{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}',
         "code -1001: Internal error; unable to process your request. Please try again."),
        ("binance", 403, '""', "HTTP 403"),
        ("binance", 503, '"  Service Unavailable \\n"', "Service Unavailable"),
        ("kraken", 200, '{"error":["EGeneral:Too many requests"]}', "EGeneral:Too many requests"),
        ("kraken", 200, '{"error":["EService:Unavailable","EService:Busy"],"result":{}}', "EService:Unavailable; EService:Busy"),
        ("kraken", 429, '{"error":["EGeneral:Too many requests"]}', "EGeneral:Too many requests"),
        ("kraken", 500, '{"error":[],"result":{}}', '{"error":[],"result":{}}'),
        ("kraken", 520, '"<html><body>Web server is returning an unknown error</body></html>"',
         "<html><body>Web server is returning an unknown error</body></html>"),
        ("coinbase", 429, '{"message":"Public rate limit exceeded"}', "Public rate limit exceeded"),
        ("coinbase", 200, '{"message":"Internal server error"}', "Internal server error"),
        ("coinbase", 500, '{"message":"Internal server error"}', "Internal server error"),
        ("coinbase", 400, '{"message":"Invalid limit"}', "Invalid limit"),
        ("coinbase", 502, '""', "HTTP 502"),
    ],
)
def test_error_answer_is_a_rest_error_event_not_a_dead_letter(check_trades, exchange, status, body, error):
    good, trade = good_neighbour(exchange)
    res = parse_both(parser_for(exchange), [frame(exchange, status, body), good])
    assert res.dead == []
    assert (res.trade_frames, res.control, res.ignored) == (1, 1, 0)
    assert [(e.index, e.kind, e.detail) for e in res.events] == [
        (0, "rest_error", {"status": status, "error": error}),
        (1, "rest", {"endpoint": ENDPOINTS[exchange], "items": 1, "last": LASTS[exchange]}),
    ]
    check_trades(trades_from_table(res.trades), [trade])


@pytest.mark.parametrize("exchange", VENUES)
@pytest.mark.parametrize("status", [201, 206, 404, 500])
def test_non_200_status_gives_no_trades_even_with_a_trade_body(exchange, status):
    res = parse_both(parser_for(exchange), [frame(exchange, status)])
    assert res.trades.num_rows == 0 and res.dead == []
    assert (res.trade_frames, res.control) == (0, 1)
    [ev] = res.events
    assert ev.kind == "rest_error" and ev.detail == {"status": status, "error": BODIES[exchange][0]}


@pytest.mark.parametrize("exchange", VENUES)
def test_long_error_text_is_cut(exchange):
    page = "<html>" + "x" * 1000 + "</html>"
    res = parse_both(parser_for(exchange), [frame(exchange, 503, json.dumps(page))])
    [ev] = res.events
    assert ev.detail == {"status": 503, "error": page[:500] + "…"}


# ---------------------------------------------------------------- 200 bodies of the wrong shape


@pytest.mark.parametrize(
    ("exchange", "body", "reason"),
    [
        ("binance", '{"trades":[]}', "REST frame: body is not an array of trades (dict)"),
        ("binance", '"<html>maintenance</html>"', "REST frame: body is not an array of trades (str)"),
        ("binance", "null", "REST frame: body is not an array of trades (NoneType)"),
        ("coinbase", '{"trades":[]}', "REST frame: body is not an array of trades (dict)"),
        ("coinbase", '""', "REST frame: body is not an array of trades (str)"),
        ("kraken", "[]", 'REST frame: body is not a Kraken response {"error":[...],"result":{...}}'),
        ("kraken", '{"result":{"XXBTZUSD":[],"last":"1"}}', 'REST frame: body is not a Kraken response {"error":[...],"result":{...}}'),
        ("kraken", '{"error":"EGeneral:Too many requests"}', 'REST frame: body is not a Kraken response {"error":[...],"result":{...}}'),
        ("kraken", '{"error":[]}', "REST frame: `result` is not an object"),
        ("kraken", '{"error":[],"result":[]}', "REST frame: `result` is not an object"),
        ("kraken", '{"error":[],"result":{"XXBTZUSD":[]}}', "REST frame: `result.last` is not a cursor string (None)"),
        ("kraken", '{"error":[],"result":{"XXBTZUSD":[],"last":1784073599000000000}}',
         "REST frame: `result.last` is not a cursor string (1784073599000000000)"),
        ("kraken", '{"error":[],"result":{"last":"1"}}', "REST frame: `result` must hold exactly one pair besides `last` (found [])"),
        ("kraken", '{"error":[],"result":{"XXBTZUSD":[],"XETHZUSD":[],"last":"1"}}',
         "REST frame: `result` must hold exactly one pair besides `last` (found ['XXBTZUSD', 'XETHZUSD'])"),
        ("kraken", '{"error":[],"result":{"XXBTZUSD":{"0":[]},"last":"1"}}', "REST frame: `result.XXBTZUSD` is not an array"),
    ],
)
def test_200_body_of_another_shape_is_a_dead_letter(check_trades, exchange, body, reason):
    good, trade = good_neighbour(exchange)
    res = parse_both(parser_for(exchange), [frame(exchange, 200, body), good])
    assert res.dead == [(0, reason)]
    assert [(e.index, e.kind) for e in res.events] == [(1, "rest")]
    assert (res.trade_frames, res.control) == (1, 0)
    check_trades(trades_from_table(res.trades), [trade])


# ---------------------------------------------------------------- items


def _b(tid, price='"1.00000000"', qty='"2.00000000"', time="1784073599123", maker="true", drop=()):
    fields = {"id": tid, "price": price, "qty": qty, "quoteQty": '"2.00000000"', "time": time, "isBuyerMaker": maker,
              "isBestMatch": "true"}
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if k not in drop) + "}"


def _k(tid, price='"1.00000"', qty='"2.00000000"', time="1784073599.1234567", side='"b"', tail=None):
    parts = [price, qty, time, side, '"l"', '""', str(tid)] if tail is None else tail
    return "[" + ",".join(parts) + "]"


def _c(tid, price='"1.00000000"', size='"2.00000000"', time='"2026-07-14T23:59:59.123Z"', side='"buy"', drop=()):
    fields = {"time": time, "trade_id": tid, "price": price, "size": size, "side": side}
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if k not in drop) + "}"


def _kbody(*items):
    return '{"error":[],"result":{"XXBTZUSD":[' + ",".join(items) + '],"last":"1784073599123456700"}}'


ITEM_CASES = {
    "binance": [
        (_b(2, drop=("price",)), "bad REST trade: body[1]: Object missing required field `price`"),
        (_b(2, price="1.5"), "bad REST trade: body[1]: Expected `str`, got `decimal` - at `$.price`"),
        (_b('"2"'), "bad REST trade: body[1]: Expected `int`, got `str` - at `$.id`"),
        (_b(2, maker='"true"'), "bad REST trade: body[1]: Expected `bool`, got `str` - at `$.isBuyerMaker`"),
        (_b(2, time="null"), "bad REST trade: body[1]: Expected `int`, got `null` - at `$.time`"),
        ("[2]", "bad REST trade: body[1]: Expected `object`, got `array`"),
        (_b(2, price='"4.0.1"'), "price: not a decimal ('4.0.1')"),
        (_b(2, price='"1,5"'), "price: not a decimal ('1,5')"),
        (_b(2, qty='"0.00000000"'), "qty: not positive ('0')"),
        (_b(2, qty='"-1.00000000"'), "qty: not positive ('-1')"),
        (_b(-2), "trade_id: not an integer in range (-2)"),
        (_b(2, time="1230940799999"), "timestamp out of range (1230940799999000 µs, received at 1784073600500000)"),
        (_b(2, time="1784160000500001"), "timestamp out of range (1784160000500001 µs, received at 1784073600500000)"),
    ],
    "kraken": [
        (_k(2, tail=['"1"', '"1"', "1784073599.5", '"b"', '"l"', '""']),
         "bad REST trade: result.XXBTZUSD[1]: Expected `array` of at least length 7, got 6"),
        (_k(2, time='"1784073599.5"'), "bad REST trade: result.XXBTZUSD[1]: Expected `number`, got `str` - at `$[2]`"),
        (_k(2, time="true"), "bad REST trade: result.XXBTZUSD[1]: Expected `decimal`, got `bool` - at `$[2]`"),
        (_k(2, price="1.5"), "bad REST trade: result.XXBTZUSD[1]: Expected `str`, got `decimal` - at `$[0]`"),
        (_k('"2"'), "bad REST trade: result.XXBTZUSD[1]: Expected `int`, got `str` - at `$[6]`"),
        ('{"price":"1"}', "bad REST trade: result.XXBTZUSD[1]: Expected `array`, got `object`"),
        (_k(2, side='"x"'), "side: not buy/sell ('x')"),
        (_k(2, qty='"abc"'), "qty: not a decimal ('abc')"),
        (_k(2, price='"0.00000"'), "price: not positive ('0')"),
        (_k(2, time="1230940799.9999999"), "timestamp out of range (1230940799999999 µs, received at 1784073600500000)"),
        (_k(2, time="-1"), "timestamp out of range (-1000000 µs, received at 1784073600500000)"),
        (_k(2, time="1e300"), "timestamp out of range (0 µs, received at 1784073600500000)"),
    ],
    "coinbase": [
        (_c(2, drop=("size",)), "bad REST trade: body[1]: Object missing required field `size`"),
        (_c('"2"'), "bad REST trade: body[1]: Expected `int`, got `str` - at `$.trade_id`"),
        (_c(2, price="1.5"), "bad REST trade: body[1]: Expected `str`, got `decimal` - at `$.price`"),
        ('"trade"', "bad REST trade: body[1]: Expected `object`, got `str`"),
        (_c(2, side='"BUY"'), "side: not buy/sell ('BUY')"),
        (_c(2, side='"x"'), "side: not buy/sell ('x')"),
        (_c(2, time='"2026-07-14 23:59:59Z"'), "timestamp: not an RFC3339 UTC time ('2026-07-14 23:59:59Z')"),
        (_c(2, time='"2026-07-14T23:59:59.1234567890Z"'), "timestamp: not an RFC3339 UTC time ('2026-07-14T23:59:59.1234567890Z')"),
        (_c(2, size='"1.0000000000000000001"'), "qty: more than 18 decimal places ('1.0000000000000000001')"),
        (_c(2, price='"-370.00000000"'), "price: not positive ('-370')"),
        (_c(2, time='"2008-12-31T23:59:59Z"'), "timestamp out of range (1230767999000000 µs, received at 1784073600500000)"),
    ],
}
GOOD_ITEMS = {"binance": (_b(1), _b(3)), "kraken": (_k(1), _k(3)), "coinbase": (_c(3), _c(1))}


def _good_trades(exchange):
    if exchange == "binance":
        return [B(t, "1", "2", "sell", 1784073599123000, R) for t in (1, 3)]
    if exchange == "kraken":
        return [K(t, "1", "2", "buy", 1784073599123456, R) for t in (1, 3)]
    return [C(t, "1", "2", "sell", 1784073599123000, R) for t in (3, 1)]


def _body(exchange, items):
    return _kbody(*items) if exchange == "kraken" else "[" + ",".join(items) + "]"


@pytest.mark.parametrize(("exchange", "item", "reason"), [(e, i, r) for e, cases in ITEM_CASES.items() for i, r in cases])
def test_bad_item_dead_letters_the_frame_once_and_keeps_the_good_items(check_trades, exchange, item, reason):
    first, last = GOOD_ITEMS[exchange]
    res = parse_both(parser_for(exchange), [frame(exchange, 200, _body(exchange, [first, item, last]))])
    assert res.dead == [(0, reason)]
    assert (res.trade_frames, res.control, res.ignored) == (1, 0, 0)
    [ev] = res.events
    assert ev.kind == "rest" and ev.detail["items"] == 3  # the answer is well formed: the cursor still counts
    check_trades(trades_from_table(res.trades), _good_trades(exchange))


@pytest.mark.parametrize("exchange", VENUES)
def test_frame_with_several_bad_items_gets_the_first_bad_items_reason(check_trades, exchange):
    """A value error (found by finalize_trades) before a schema error (found while decoding): the first one wins."""
    (value_item, value_reason), schema_item = {
        "binance": ((_b(2, price='"4.0.1"'), "price: not a decimal ('4.0.1')"), _b(4, drop=("qty",))),
        "kraken": ((_k(2, side='"x"'), "side: not buy/sell ('x')"), _k(4, time='"1"')),
        "coinbase": ((_c(2, side='"x"'), "side: not buy/sell ('x')"), _c(4, drop=("time",))),
    }[exchange]
    first, last = GOOD_ITEMS[exchange]
    p = parser_for(exchange)
    res = parse_both(p, [frame(exchange, 200, _body(exchange, [first, value_item, schema_item, last]))])
    assert res.dead == [(0, value_reason)]
    check_trades(trades_from_table(res.trades), _good_trades(exchange))
    # the other order: the schema error comes first
    res = parse_both(p, [frame(exchange, 200, _body(exchange, [first, schema_item, value_item, last]))])
    assert len(res.dead) == 1 and res.dead[0][1].startswith("bad REST trade: ")
    assert ("[1]" in res.dead[0][1]) and [e.detail["items"] for e in res.events] == [4]


@pytest.mark.parametrize("exchange", VENUES)
def test_bad_items_in_several_frames_of_a_batch(check_trades, exchange):
    first, last = GOOD_ITEMS[exchange]
    bad_item, reason = ITEM_CASES[exchange][0]
    value_item, value_reason = ITEM_CASES[exchange][-1]
    frames = [
        frame(exchange, 200, _body(exchange, [bad_item, first])),
        frame(exchange),
        frame(exchange, 200, _body(exchange, [last, value_item])),
    ]
    res = parse_both(parser_for(exchange), frames)
    assert sorted(res.dead) == [(0, reason.replace("[1]", "[0]")), (2, value_reason)]
    assert [e.detail["items"] for e in res.events] == [2, 1, 2]
    first_trade, last_trade = _good_trades(exchange)
    check_trades(trades_from_table(res.trades), [first_trade, BODIES[exchange][1], last_trade])


# ---------------------------------------------------------------- venue specifics


@pytest.mark.parametrize(
    ("literal", "us"),
    [
        ("1688669597.8277369", 1688669597827736),  # 7 decimals, truncated
        ("1688669597.827736", 1688669597827736),
        ("1688669597.8277361", 1688669597827736),
        ("1688669597.8277369999999999999999999999999", 1688669597827736),  # truncated, never rounded up
        ("1688669597.9999999", 1688669597999999),
        ("1688669597", 1688669597000000),  # an integer literal
        ("1688669597.0", 1688669597000000),
        ("1.6886695978277369e9", 1688669597827736),  # exponent form, exact
        ("16886695978277369E-7", 1688669597827736),
        ("1688669597.1", 1688669597100000),
    ],
)
def test_kraken_time_literal_is_read_exactly_and_truncated_to_us(check_trades, literal, us):
    body = _kbody(f'["30243.40000","0.34507674",{literal},"b","m","",61044952]')
    res = parse_both(parser_for("kraken"), [frame("kraken", 200, body)], [1688671970100000])
    assert res.dead == []
    check_trades(trades_from_table(res.trades), [K(61044952, "30243.4", "0.34507674", "buy", us, 1688671970100000)])


def test_kraken_item_with_more_elements_than_documented_is_read(check_trades):
    body = _kbody('["0.1654300","12000.00000000",1784073591.1234567,"s","m","",98765432,"new",{"x":1}]')
    url = "https://api.kraken.com/0/public/Trades?since=1&pair=XDGUSD"
    res = parse_both(parser_for("kraken"), [frame("kraken", 200, body, url)])
    assert res.dead == []
    check_trades(trades_from_table(res.trades), [K(98765432, "0.16543", "12000", "sell", 1784073591123456, R, "DOGE-USD", "DOGE/USD")])


def test_kraken_result_key_does_not_choose_the_instrument(check_trades):
    """The key is Kraken's name for the pair asked for; the instrument is the one named by ``pair``."""
    body = '{"error":[],"result":{"last":"1","XDGUSD":[["0.1654300","1.00000000",1784073591.5,"b","l","",7]]}}'
    res = parse_both(parser_for("kraken"), [frame("kraken", 200, body, "https://api.kraken.com/0/public/Trades?pair=XDGUSD")])
    check_trades(trades_from_table(res.trades), [K(7, "0.16543", "1", "buy", 1784073591500000, R, "DOGE-USD", "DOGE/USD")])
    assert res.events[0].detail == {"endpoint": "/0/public/Trades", "items": 1, "last": "1"}


def test_kraken_warning_in_error_is_an_error_answer():
    """Any non-empty ``error`` array is an error answer (no trades), as the API contract says to check ``error``."""
    body = '{"error":["WGeneral:Deprecated"],"result":{"XXBTZUSD":[' + _k(1) + '],"last":"1"}}'
    res = parse_both(parser_for("kraken"), [frame("kraken", 200, body)])
    assert res.trades.num_rows == 0 and res.dead == []
    assert [(e.kind, e.detail) for e in res.events] == [("rest_error", {"status": 200, "error": "WGeneral:Deprecated"})]


@pytest.mark.parametrize(
    ("time", "maker", "side", "us"),
    [
        ("1784073599123", "true", "sell", 1784073599123000),  # ms (the default)
        ("1784073599123456", "false", "buy", 1784073599123456),  # µs (X-MBX-TIME-UNIT: MICROSECOND)
        ("1230940800000", "false", "buy", 1230940800000000),  # the earliest accepted time, in ms
    ],
)
def test_binance_time_unit_by_magnitude_and_side(check_trades, time, maker, side, us):
    body = "[" + _b(9, time=time, maker=maker) + "]"
    res = parse_both(parser_for("binance"), [frame("binance", 200, body)])
    assert res.dead == []
    check_trades(trades_from_table(res.trades), [B(9, "1", "2", side, us, R)])


def test_binance_lower_case_symbol_matches_upper_case(check_trades):
    url = "https://api.binance.com/api/v3/trades?symbol=ethusdt&limit=1"
    res = parse_both(parser_for("binance"), [frame("binance", 200, "[" + _b(5) + "]", url)])
    check_trades(trades_from_table(res.trades), [B(5, "1", "2", "sell", 1784073599123000, R, "ETH-USDT", "ETHUSDT")])


def test_coinbase_percent_encoded_product_and_maker_side(check_trades):
    url = "https://api.exchange.coinbase.com/products/ETH%2DUSD/trades?before=5&limit=2"
    body = "[" + _c(6, side='"sell"') + "," + _c(5, side='"buy"') + "]"
    res = parse_both(parser_for("coinbase"), [frame("coinbase", 200, body, url)])
    check_trades(trades_from_table(res.trades), [
        C(6, "1", "2", "buy", 1784073599123000, R, "ETH-USD"),
        C(5, "1", "2", "sell", 1784073599123000, R, "ETH-USD"),
    ])
    assert res.events[0].detail == {"endpoint": "/products/ETH%2DUSD/trades", "items": 2, "last": None}


def test_configured_instruments_with_their_own_rest_symbol(check_trades):
    table = InstrumentTable.default([
        Instrument.make("kraken", "MATIC/USD", "MATIC", "USD", "MATICUSD"),
        Instrument.make("coinbase", "MATIC-USD", "MATIC", "USD"),
    ])
    k = frame("kraken", 200, '{"error":[],"result":{"MATICUSD":[["0.51470","6423.46326000",1695628116.9255331,"b","l","",4665846]],'
              '"last":"1695628116925533100"}}', "https://api.kraken.com/0/public/Trades?pair=MATICUSD&since=0")
    c = frame("coinbase", 200, "[" + _c(77) + "]", "https://api.exchange.coinbase.com/products/MATIC-USD/trades")
    rk = parse_both(make_parser("kraken", table), [k])
    rc = parse_both(make_parser("coinbase", table), [c])
    check_trades(trades_from_table(rk.trades), [K(4665846, "0.5147", "6423.46326", "buy", 1695628116925533, R, "MATIC-USD", "MATIC/USD")])
    check_trades(trades_from_table(rc.trades), [C(77, "1", "2", "sell", 1784073599123000, R, "MATIC-USD")])


# ---------------------------------------------------------------- the instrument table's REST lookup


def test_lookup_rest(table):
    assert table.lookup_rest("binance", "BTCUSDT").symbol == "BTC-USDT"
    assert table.lookup_rest("binance", "btcusdt").symbol == "BTC-USDT"  # Binance: upper case
    assert table.lookup_rest("kraken", "XBTUSD").native_symbol == "BTC/USD"
    assert table.lookup_rest("kraken", "XDGUSD").symbol == "DOGE-USD"
    assert table.lookup_rest("kraken", "ETHUSD").symbol == "ETH-USD"
    assert table.lookup_rest("coinbase", "DOGE-USD").symbol == "DOGE-USD"
    for exchange, name in [
        ("kraken", "xbtusd"),  # exact
        ("kraken", "XXBTZUSD"),  # the result key is not a rest_symbol
        ("kraken", "BTC/USD"),  # nor the WS name
        ("kraken", "BTCUSD"),
        ("coinbase", "btc-usd"),
        ("coinbase", "BTCUSD"),
        ("binance", "BTC-USDT"),
        ("binance", "NOPEUSDT"),
        ("nope", "BTCUSDT"),
    ]:
        assert table.lookup_rest(exchange, name) is None, (exchange, name)
    for inst in table:
        assert table.lookup_rest(inst.exchange, inst.rest_symbol) is inst


def test_lookup_rest_with_configured_rest_symbol():
    t = InstrumentTable.default([Instrument.make("kraken", "XBT/EUR", "XBT", "ZEUR", "XBTEUR"), Instrument.make("binance", "pepeusdt", "PEPE", "USDT")])
    assert t.lookup_rest("kraken", "XBTEUR").symbol == "BTC-EUR"
    assert t.lookup_rest("binance", "PEPEUSDT").symbol == "PEPE-USDT"
    assert t.lookup_rest("binance", "pepeusdt").symbol == "PEPE-USDT"
