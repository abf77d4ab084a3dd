"""The local exchange simulator: one aiohttp server per exchange on 127.0.0.1, ground truth and faults."""

from __future__ import annotations

from typing import Any

from k2.sim.binance import BinanceVenue
from k2.sim.coinbase import CoinbaseVenue
from k2.sim.config import PORT_OFFSETS, SimConfig
from k2.sim.kraken import KrakenVenue
from k2.sim.market import SimTrade
from k2.sim.venue import Venue

VENUES: dict[str, type[Venue]] = {"binance": BinanceVenue, "kraken": KrakenVenue, "coinbase": CoinbaseVenue}
#: Path of each exchange's WebSocket endpoint(s) on its server.
WS_PATHS = {("binance", None): "", ("kraken", None): "/v2", ("coinbase", None): "", ("coinbase", "advanced"): "/advanced"}


class ExchangeSimulator:
    """Binance, Kraken and Coinbase speaking their public-trade wire protocols on local ports.

    Usage (inside a running event loop)::

        sim = ExchangeSimulator(SimConfig(rate=200))
        await sim.start()
        ...  # connect to sim.ws_url("kraken"), inject faults, compare with sim.emitted("kraken")
        await sim.stop()

    Every method other than ``start``/``stop`` is synchronous and must be called from the simulator's
    event loop thread (use :class:`k2.sim.SimulatorThread` from other threads).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        table = self.config.instrument_table()
        self._venues: dict[str, Venue] = {ex: VENUES[ex](self.config, table) for ex in self.config.exchanges}
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind every exchange's server and start generating trades."""
        if self._started:
            raise RuntimeError("simulator already started")
        self._started = True
        try:
            for name, venue in self._venues.items():
                port = 0 if self.config.base_port == 0 else self.config.base_port + PORT_OFFSETS[name]
                await venue.start(self.config.host, port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every connection (code 1001) and every server. Idempotent."""
        for venue in self._venues.values():
            await venue.stop()

    async def __aenter__(self) -> ExchangeSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ addresses

    def _venue(self, exchange: str) -> Venue:
        try:
            return self._venues[exchange]
        except KeyError:
            raise KeyError(f"exchange {exchange!r} is not simulated (simulating {', '.join(self._venues)})") from None

    @property
    def exchanges(self) -> tuple[str, ...]:
        return tuple(self._venues)

    def port(self, exchange: str) -> int:
        """The bound port of an exchange's server (0 before ``start``)."""
        return self._venue(exchange).port

    def _host(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    def ws_url(self, exchange: str, variant: str | None = None) -> str:
        """WebSocket base URL: binance ``ws://H:P`` (append ``/stream?...`` or ``/ws``), kraken ``ws://H:P/v2``,
        coinbase ``ws://H:P`` (Exchange feed) or, with ``variant="advanced"``, ``ws://H:P/advanced``."""
        path = WS_PATHS.get((exchange, variant))
        if path is None:
            raise ValueError(f"no WebSocket variant {variant!r} for {exchange}")
        return f"ws://{self._host()}:{self.port(exchange)}{path}"

    def rest_url(self, exchange: str) -> str:
        """REST base URL ``http://H:P`` (no trailing slash)."""
        return f"http://{self._host()}:{self.port(exchange)}"

    def settings_env(self, coinbase_advanced: bool = False) -> dict[str, str]:
        """``K2_<EXCHANGE>_WS_URL`` and ``K2_<EXCHANGE>_REST_URL`` for every simulated exchange."""
        env: dict[str, str] = {}
        for name in self._venues:
            variant = "advanced" if name == "coinbase" and coinbase_advanced else None
            env[f"K2_{name.upper()}_WS_URL"] = self.ws_url(name, variant)
            env[f"K2_{name.upper()}_REST_URL"] = self.rest_url(name)
        return env

    # ------------------------------------------------------------------ generation control

    def _selected(self, exchange: str | None) -> list[Venue]:
        return list(self._venues.values()) if exchange is None else [self._venue(exchange)]

    def pause(self, exchange: str | None = None) -> None:
        """Stop generating trades (one exchange, or all). Heartbeats and pings go on."""
        for venue in self._selected(exchange):
            venue.pause()

    def resume(self, exchange: str | None = None) -> None:
        """Resume generating trades."""
        for venue in self._selected(exchange):
            venue.resume()

    # ------------------------------------------------------------------ ground truth

    def emitted(self, exchange: str) -> list[SimTrade]:
        """Every trade generated that a client can obtain (WS or REST): instrument by instrument, id order.

        Trades beyond the last ``history_per_symbol`` of a symbol are forgotten (as REST forgets them)."""
        return self._venue(exchange).market.emitted()

    def unfillable(self, exchange: str) -> list[tuple[str, int, int]]:
        """(canonical symbol, first id, last id) ranges hidden from both WS and REST."""
        return self._venue(exchange).market.unfillable()

    def last_id(self, exchange: str, symbol: str) -> int:
        """Highest generated trade id of a canonical symbol (0 if none yet)."""
        return self._venue(exchange).market.book(symbol).last_id

    def stats(self, exchange: str) -> dict[str, Any]:
        """Counters: connections_accepted, connections_refused, frames_sent, rest_requests, rest_rate_limited, ..."""
        return self._venue(exchange).stats_dict()

    def state(self, exchange: str) -> dict[str, Any]:
        """What ``GET /_sim/state`` answers."""
        return self._venue(exchange).state()

    # ------------------------------------------------------------------ faults

    def drop_connections(self, exchange: str) -> None:
        """Abort every open WebSocket of the exchange (TCP abort, no close frame)."""
        self._venue(exchange).drop_connections()

    def stall(self, exchange: str, seconds: float) -> None:
        """Open connections send nothing (trades, heartbeats, pings, replies) for ``seconds``.

        Trades generated meanwhile reach REST only: a gap the client must backfill. Connections opened
        during the stall are not stalled."""
        self._venue(exchange).stall(seconds)

    def skip_ids(self, exchange: str, symbol: str, count: int, rest: bool = True) -> None:
        """The next ``count`` trades of ``symbol`` are generated but not sent on WS; ``rest=False`` also hides
        them from REST (reported by ``unfillable``, excluded from ``emitted``)."""
        self._venue(exchange).skip_ids(symbol, count, rest)

    def repeat_frames(self, exchange: str, count: int) -> None:
        """The next ``count`` trade frames sent (counted per connection) are each sent twice."""
        self._venue(exchange).repeat_frames(count)

    def send_malformed(self, exchange: str, count: int) -> None:
        """Send ``count`` malformed frames now on every connection: truncated JSON, price as an object,
        negative qty, invalid UTF-8 in a binary frame (rotating)."""
        self._venue(exchange).send_malformed(count)

    def announce_shutdown(self, exchange: str, grace_s: float = 0.5) -> None:
        """Binance ``serverShutdown`` / Kraken status ``maintenance`` / nothing on Coinbase, then close 1001."""
        self._venue(exchange).announce_shutdown(grace_s)

    def refuse_connections(self, exchange: str, count: int) -> None:
        """The next ``count`` WebSocket connection attempts get HTTP 503 instead of the upgrade."""
        self._venue(exchange).refuse_connections(count)

    def rest_errors(self, exchange: str, count: int, status: int = 500) -> None:
        """The next ``count`` REST requests answer ``status`` with the exchange's error body."""
        self._venue(exchange).rest_errors(count, status)

    def rest_rate_limit(self, exchange: str, count: int) -> None:
        """The next ``count`` REST requests get the exchange's rate-limit answer."""
        self._venue(exchange).rest_rate_limit(count)
