"""What the one session loop needs to know about a venue: the :class:`VenueFeed` protocol.

A venue feed is pure protocol knowledge, no I/O: the endpoint, the subscribe messages (in the exchange's
documented batches) with the acknowledgements that complete them, what each control event means, the
venue's timings and limits, and how to page its REST trades endpoint for backfill. The loop in
``k2.venues.session`` and the backfill in ``k2.venues.backfill`` do the I/O for every venue alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

import msgspec

from k2.model.instrument import Instrument
from k2.venues.base import ControlEvent

_enc = msgspec.json.Encoder()


@dataclass
class Subscription:
    """One message to send, and the acknowledgement tokens that must all arrive for it to count as done."""

    payload: str
    expect: set[str]


@dataclass
class EventOutcome:
    """What a control event means to the session."""

    acked: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # token (or "*" for the whole request) -> message
    shutdown: str | None = None  # the server announced it is going away: reconnect now
    heartbeat_native: str | None = None  # a per-stream heartbeat for this wire symbol
    last_trade_id: int | None = None  # ...reporting this as the stream's latest trade
    error: str | None = None  # an exchange error message (logged and counted)


@dataclass
class RestRequest:
    """One REST call: the URL (with query), extra headers and its cost against the venue's budget."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    cost: float = 1.0


@dataclass
class BackfillJob:
    """Fetch trades of ``inst`` from id ``first``; up to ``last`` inclusive, or up to now when ``last`` is None.

    ``ts_before_us`` is the exchange time of trade ``first - 1`` (Kraken pages by time, not id).
    """

    inst: Instrument
    first: int
    last: int | None
    ts_before_us: int


class RestPager(Protocol):
    """Walks a venue's REST trades endpoint for one job; fed every page's ids, says what to ask next."""

    def next_request(self) -> RestRequest | None: ...

    def page_done(self, ids: list[int], items: int, cursor: str | None) -> None: ...


class VenueFeed(Protocol):
    exchange: str
    stale_s: float  # no frame at all for this long: the connection is dead
    msgs_per_s: float  # our messages per second on one connection, at most
    ws_ping_s: float | None  # WebSocket-level pings we send (None: the venue pings us, or heartbeats prove liveness)
    app_ping_s: float | None  # application-level pings we send
    rotate_s: float | None  # planned, overlapping reconnect after this long
    per_stream_heartbeats: bool  # the venue sends a heartbeat per subscribed stream (Coinbase Exchange)
    sequenced: bool  # frames carry a per-connection sequence number (``sequence_of``; Coinbase Advanced)

    def url(self) -> str: ...

    def subscriptions(self, instruments: list[Instrument]) -> list[Subscription]: ...

    def resubscribe(self, inst: Instrument) -> list[Subscription]:
        """Unsubscribe and subscribe one quiet stream again (acknowledged like any subscription)."""
        ...

    def app_ping(self, n: int) -> str | None: ...

    def on_event(self, ev: ControlEvent) -> EventOutcome: ...

    def sequence_of(self, frame: str | bytes) -> int | None:
        """Per-connection message sequence number of a frame, where the venue has one (Coinbase Advanced)."""
        ...

    def pager(self, job: BackfillJob, max_trades: int) -> RestPager: ...

    def head_request(self, inst: Instrument) -> RestRequest | None:
        """The REST call giving a stream's latest trade, where subscribing does not (Binance sends no snapshot;
        Kraken's snapshot and Coinbase's ``last_match``/snapshot anchor the stream by themselves)."""
        ...


def dumps(obj) -> str:
    return _enc.encode(obj).decode()


def rest_frame(url: str, status: int, body: str | bytes) -> str:
    """The raw-layer record of one REST response: ``{"rest": url, "status": n, "body": ...}``.

    The body goes in verbatim when it is valid JSON (the exchange's literals are kept byte for byte), else as a
    JSON string. Venue parsers read these frames like WebSocket frames, so replaying a capture that holds them
    reproduces the backfilled trades too.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    try:
        msgspec.json.decode(text)
        inner = text.strip()
    except (msgspec.DecodeError, UnicodeError):
        inner = dumps(text)
    if not inner:
        inner = '""'
    return f'{{"rest":{dumps(url)},"status":{int(status)},"body":{inner}}}'


def q(value: str) -> str:
    return quote(value, safe="")


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
