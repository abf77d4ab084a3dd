"""The instrument table: (exchange, native symbol) <-> canonical BASE-QUOTE symbol.

The 34 default pairs ship as ``k2/data/instruments.csv``. Users add pairs in the config file
(``[[instruments]]`` entries); exchange asset codes are mapped to common tickers (XBT->BTC, XDG->DOGE)
so a user can write either.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from importlib import resources

import msgspec

from k2.errors import ConfigError

EXCHANGES = ("binance", "kraken", "coinbase")

#: Exchange asset codes that differ from the common ticker. Kraken's legacy codes (v1 WS and REST)
#: use XBT and XDG, and REST pair names carry X/Z prefixes (XXBT, ZUSD).
ASSET_ALIASES = {
    "XBT": "BTC",
    "XXBT": "BTC",
    "XDG": "DOGE",
    "XXDG": "DOGE",
    "XETH": "ETH",
    "XXRP": "XRP",
    "XLTC": "LTC",
    "ZUSD": "USD",
    "ZEUR": "EUR",
}


def common_ticker(code: str) -> str:
    code = code.strip().upper()
    return ASSET_ALIASES.get(code, code)


class Instrument(msgspec.Struct, frozen=True):
    exchange: str
    native_symbol: str
    base: str
    quote: str
    symbol: str
    rest_symbol: str

    @classmethod
    def make(
        cls, exchange: str, native_symbol: str, base: str, quote: str, rest_symbol: str | None = None
    ) -> "Instrument":
        exchange = exchange.strip().lower()
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r} (expected one of {', '.join(EXCHANGES)})")
        native_symbol = native_symbol.strip()
        if not native_symbol:
            raise ValueError("native_symbol is empty")
        b, q = common_ticker(base), common_ticker(quote)
        if not b or not q:
            raise ValueError("base and quote must not be empty")
        return cls(exchange, native_symbol, b, q, f"{b}-{q}", (rest_symbol or native_symbol).strip())


def _alternative_natives(inst: Instrument) -> Iterator[str]:
    """Other spellings an exchange uses for the same pair on the wire."""
    if inst.exchange == "kraken" and "/" in inst.native_symbol:
        base, quote = inst.native_symbol.split("/", 1)
        for code, ticker in ASSET_ALIASES.items():
            if ticker == base and len(code) == 3:
                yield f"{code}/{quote}"  # v1-style XBT/USD, XDG/USD
    if inst.exchange == "binance":
        yield inst.native_symbol.lower()


class InstrumentTable:
    """Lookup from (exchange, wire symbol) to the instrument. Immutable once built.

    Two lookups: :meth:`lookup` by the symbol a WebSocket frame carries (any of its wire spellings), and
    :meth:`lookup_rest` by the symbol a REST request names (the ``rest_symbol`` column: Kraken's REST pair
    ``XBTUSD``/``XDGUSD``, Coinbase's product id, Binance's upper-case symbol).
    """

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._by_key: dict[tuple[str, str], Instrument] = {}
        self._list: list[Instrument] = []
        self._lookup: dict[str, dict[str, Instrument]] = {e: {} for e in EXCHANGES}
        for inst in instruments:
            key = (inst.exchange, inst.native_symbol)
            if key in self._by_key:
                self._list = [i for i in self._list if (i.exchange, i.native_symbol) != key]
            self._by_key[key] = inst
            self._list.append(inst)
        self._rest: dict[str, dict[str, Instrument]] = {e: {} for e in EXCHANGES}
        for inst in self._list:
            table = self._lookup[inst.exchange]
            for alt in _alternative_natives(inst):
                table.setdefault(alt, inst)
            table[inst.native_symbol] = inst
            self._rest[inst.exchange][_rest_key(inst.exchange, inst.rest_symbol)] = inst

    @classmethod
    def default(cls, extra: Iterable[Instrument] = ()) -> "InstrumentTable":
        return cls([*load_default_instruments(), *extra])

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def for_exchange(self, exchange: str) -> list[Instrument]:
        return [i for i in self._list if i.exchange == exchange]

    def lookup(self, exchange: str, wire_symbol: str) -> Instrument | None:
        return self._lookup.get(exchange, {}).get(wire_symbol)

    def lookup_rest(self, exchange: str, rest_symbol: str) -> Instrument | None:
        """The instrument a REST request names (``symbol=`` / ``pair=`` / product id), or None.

        The match is exact: no alias or X/Z-prefix guessing (Kraken's ``XXBTZUSD`` result key is not a
        ``rest_symbol``). Binance symbols are upper case in REST, so a Binance name matches in upper case.
        """
        return self._rest.get(exchange, {}).get(_rest_key(exchange, rest_symbol))

    def wire_map(self, exchange: str) -> dict[str, Instrument]:
        """Every wire spelling of every instrument of ``exchange`` -> instrument (a copy)."""
        return dict(self._lookup.get(exchange, {}))

    def by_symbol(self, exchange: str, symbol: str) -> Instrument | None:
        for inst in self._list:
            if inst.exchange == exchange and inst.symbol == symbol:
                return inst
        return None


def _rest_key(exchange: str, rest_symbol: str) -> str:
    return rest_symbol.upper() if exchange == "binance" else rest_symbol


def load_default_instruments() -> list[Instrument]:
    text = resources.files("k2").joinpath("data/instruments.csv").read_text(encoding="utf-8")
    return list(parse_instrument_csv(text.splitlines(), source="k2/data/instruments.csv"))


def parse_instrument_csv(lines: Iterable[str], source: str) -> Iterator[Instrument]:
    reader = csv.DictReader(lines)
    for n, row in enumerate(reader, start=2):
        try:
            yield Instrument.make(
                row["exchange"], row["native_symbol"], row["base"], row["quote"], row.get("rest_symbol")
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError("instruments", f"{source} line {n}: {exc}") from None
