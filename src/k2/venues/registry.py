"""Parser construction by exchange name."""

from __future__ import annotations

from k2.model.instrument import EXCHANGES, InstrumentTable
from k2.venues.base import VenueParser


def make_parser(exchange: str, instruments: InstrumentTable, *, coinbase_advanced_side_is_maker: bool = True) -> VenueParser:
    if exchange == "binance":
        from k2.venues.binance.parse import BinanceParser

        return BinanceParser(instruments)
    if exchange == "kraken":
        from k2.venues.kraken.parse import KrakenParser

        return KrakenParser(instruments)
    if exchange == "coinbase":
        from k2.venues.coinbase.parse import CoinbaseParser

        return CoinbaseParser(instruments, advanced_side_is_maker=coinbase_advanced_side_is_maker)
    raise KeyError(f"unknown exchange {exchange!r} (expected one of {', '.join(EXCHANGES)})")


def make_parsers(instruments: InstrumentTable, *, coinbase_advanced_side_is_maker: bool = True) -> dict[str, VenueParser]:
    return {
        e: make_parser(e, instruments, coinbase_advanced_side_is_maker=coinbase_advanced_side_is_maker)
        for e in EXCHANGES
    }
