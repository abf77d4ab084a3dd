"""REST-response frames: K2's envelope around one backfill HTTP response, shared by the three venue parsers.

Live feeds fill sequence gaps by REST backfill (exchanges.md §1.7, §2.6, §3.5). Every response is stored in the raw
layer and in capture files as one frame, so that replaying a capture gives the same trades::

    {"rest":"<the request URL as sent, with query string>","status":<HTTP status>,"body":<response body>}

``body`` is the response text inserted verbatim when it is valid JSON, so the exchange's literals are kept byte for
byte (Kraken's float-seconds times are read exactly from their text), else a JSON string holding the text. K2 writes
the keys in that order, so a REST frame starts with ``{"rest":``: the parsers send such frames here before trying
their WS schemas, and the C fast path (``_scan.c``) refuses them. A frame that is not a WS frame of the venue but
is an object with a ``rest`` or ``body`` key (no WS message of the three venues has either) is read as a REST
envelope too, so that a damaged one is dead-lettered with a reason instead of being ignored.

What a frame becomes, checks in this order:

1. envelope: invalid JSON, not an object, ``rest`` / ``status`` / ``body`` missing or of the wrong type, a status
   outside 100-599 -> dead letter;
2. request: the URL path (scheme and host are configurable and ignored) is no trade endpoint of the venue, or the
   symbol it names is no instrument's ``rest_symbol`` -> dead letter: K2 cannot tell which instrument it asked for;
3. response: an HTTP status other than 200, or an API error body (even with status 200) -> no trades,
   ``result.control += 1`` and ``ControlEvent(i, "rest_error", {"status": <int>, "error": <text>})``. It is a
   well-formed answer (the backfill loop retries), not a dead letter. ``error`` is the API's message when the body
   has the venue's error shape, else the body text (or ``"HTTP <status>"`` when empty), at most
   :data:`ERROR_TEXT_MAX` characters;
4. status 200 with a body of the documented shape -> its trades, ``result.trade_frames += 1`` and
   ``ControlEvent(i, "rest", {"endpoint": <URL path>, "items": <items in the body>, "last": <Kraken cursor or None>})``.
   A bad item (missing field, wrong type, bad decimal, time out of range) dead-letters the frame once, with the
   first bad item's reason, and the other items are kept, as for multi-trade WS frames. A 200 body of another shape
   (not an array, a Kraken ``result`` without exactly one pair and a ``last`` cursor) -> dead letter.

Every trade goes through :func:`k2.venues.base.finalize_trades`, so conversion, checks and reasons are the WS ones.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import msgspec

from k2.venues.base import ControlEvent, ParseResult, decode_object

#: A REST frame as K2 writes it begins with these bytes (str or bytes frames).
REST_PREFIXES = ('{"rest":', b'{"rest":')
#: ``rest_error`` texts are cut to this many characters (an HTML error page can be large; the frame itself is kept).
ERROR_TEXT_MAX = 500


class RestEnvelope(msgspec.Struct, gc=False):
    rest: str  # the request URL as sent
    status: int  # HTTP status
    body: msgspec.Raw  # the body JSON as received (or a JSON string holding a non-JSON body)


class RestResponse(msgspec.Struct, gc=False, frozen=True):
    """A REST frame whose envelope is well formed."""

    index: int  # frame index in the batch
    url: str
    path: str  # URL path: the endpoint
    query: dict  # query parameter -> list of values
    status: int
    body: msgspec.Raw


_dec_env = msgspec.json.Decoder(RestEnvelope)
_dec_plain = msgspec.json.Decoder()  # envelope reasons only: no money in there
_dec_body = msgspec.json.Decoder(float_hook=Decimal)  # number literals read exactly, never as float


def is_rest_frame(frame: str | bytes) -> bool:
    """The frame starts the way K2 writes REST frames (checked before any WS schema)."""
    return frame[:8] in REST_PREFIXES


def is_rest_object(msg: dict) -> bool:
    """A decoded frame that is meant as a REST envelope (no WS message of the venues has these keys)."""
    return "rest" in msg or "body" in msg


def decode_rest(i: int, frame: str | bytes, result: ParseResult) -> RestResponse | None:
    """The frame's envelope, or None after dead-lettering it with the reason."""
    try:
        env = _dec_env.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError) as exc:
        msg = decode_object(_dec_plain, i, frame, result)
        if msg is not None:
            result.dead.append((i, _envelope_reason(msg, exc)))
        return None
    if not 100 <= env.status <= 599:
        result.dead.append((i, f"REST frame: `status` is not an HTTP status code ({env.status})"))
        return None
    try:
        url = urlsplit(env.rest)
        query = parse_qs(url.query, keep_blank_values=True)
    except ValueError as exc:
        result.dead.append((i, f"REST frame: `rest` is not a URL ({env.rest!r}: {exc})"))
        return None
    return RestResponse(i, env.rest, url.path, query, env.status, env.body)


def _envelope_reason(msg: dict, exc: Exception) -> str:
    if "rest" not in msg:
        return "REST frame: missing `rest`"
    if not isinstance(msg["rest"], str):
        return f"REST frame: `rest` is not a string ({msg['rest']!r})"
    if "status" not in msg:
        return "REST frame: missing `status`"
    if type(msg["status"]) is not int:
        return f"REST frame: `status` is not an integer ({msg['status']!r})"
    if "body" not in msg:
        return "REST frame: missing `body`"
    return f"REST frame: {exc}"  # e.g. a duplicate key the typed decoder refused


def query_param(resp: RestResponse, name: str, result: ParseResult) -> str | None:
    """The one value of query parameter ``name``, or None after dead-lettering the frame."""
    values = resp.query.get(name)
    if not values:
        result.dead.append((resp.index, f"REST frame: no `{name}` parameter in {resp.url!r}"))
        return None
    if len(values) > 1:
        result.dead.append((resp.index, f"REST frame: `{name}` given {len(values)} times in {resp.url!r}"))
        return None
    return values[0]


def resolve_rest(
    i: int,
    frame: str | bytes,
    result: ParseResult,
    exchange: str,
    instruments,
    symbol_of: Callable[[RestResponse, ParseResult], str | None],
    noun: str,
    api_error: Callable[[object], str | None],
):
    """The checks every venue makes, in order: envelope, endpoint and instrument (``symbol_of`` returns the
    request's symbol, or None when the path is not a known endpoint), then the status. Returns
    ``(response, instrument)`` of a 200 answer; anything else is dead-lettered or a ``rest_error`` event here.
    ``symbol_of`` may dead-letter the frame itself (a missing query parameter); when it returns None without
    doing so, the endpoint is unknown."""
    resp = decode_rest(i, frame, result)
    if resp is None:
        return None
    dead = len(result.dead)
    symbol = symbol_of(resp, result)
    if symbol is None:
        if len(result.dead) == dead:
            result.dead.append((i, f"REST frame: unknown endpoint {resp.path!r}"))
        return None
    inst = instruments.lookup_rest(exchange, symbol)
    if inst is None:
        result.dead.append((i, f"REST frame: unknown {noun} {symbol!r}"))
        return None
    if resp.status != 200:
        rest_error(resp, decode_body(resp), api_error, result)
        return None
    return resp, inst


def decode_body(resp: RestResponse) -> object:
    """The body as Python values (JSON numbers with a fraction or exponent as exact ``Decimal``)."""
    return _dec_body.decode(resp.body)


def rest_ok(resp: RestResponse, items: int, last: str | None, result: ParseResult) -> None:
    result.trade_frames += 1
    result.events.append(ControlEvent(resp.index, "rest", {"endpoint": resp.path, "items": items, "last": last}))


def rest_error(
    resp: RestResponse, body: object, api_error: Callable[[object], str | None], result: ParseResult
) -> None:
    """A non-200 status or an API error body: a ``rest_error`` event, no trades."""
    text = api_error(body)
    if text is None:
        text = body.strip() if isinstance(body, str) else bytes(resp.body).decode("utf-8", "replace")
    if not text:
        text = f"HTTP {resp.status}"
    if len(text) > ERROR_TEXT_MAX:
        text = text[:ERROR_TEXT_MAX] + "…"
    result.control += 1
    result.events.append(ControlEvent(resp.index, "rest_error", {"status": resp.status, "error": text}))
