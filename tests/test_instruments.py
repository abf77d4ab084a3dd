from __future__ import annotations

import pytest

from k2.errors import ConfigError
from k2.model.instrument import Instrument, InstrumentTable
from k2.settings import load_settings

BINANCE = "BTC ETH BNB SOL XRP ADA DOT LINK DOGE LTC AVAX ATOM".split()
USD = "BTC ETH SOL XRP ADA DOT LINK DOGE LTC AVAX ATOM".split()


def test_default_table_holds_the_34_pairs(instruments):
    assert len(instruments) == 34
    assert [i.native_symbol for i in instruments.for_exchange("binance")] == [f"{b}USDT" for b in BINANCE]
    assert [i.symbol for i in instruments.for_exchange("binance")] == [f"{b}-USDT" for b in BINANCE]
    assert [i.symbol for i in instruments.for_exchange("kraken")] == [f"{b}-USD" for b in USD]
    assert [i.native_symbol for i in instruments.for_exchange("kraken")] == [f"{b}/USD" for b in USD]
    assert [i.native_symbol for i in instruments.for_exchange("coinbase")] == [f"{b}-USD" for b in USD]
    for i in instruments:
        assert i.symbol == f"{i.base}-{i.quote}" and i.symbol.isupper()


def test_asset_codes_map_to_common_tickers(instruments):
    assert instruments.lookup("kraken", "XBT/USD").symbol == "BTC-USD"
    assert instruments.lookup("kraken", "XDG/USD").symbol == "DOGE-USD"
    assert instruments.by_symbol("kraken", "BTC-USD").rest_symbol == "XBTUSD"
    assert instruments.by_symbol("kraken", "DOGE-USD").rest_symbol == "XDGUSD"
    assert Instrument.make("kraken", "XBT/EUR", "XBT", "ZEUR").symbol == "BTC-EUR"
    assert Instrument.make("kraken", "XDG/USD", "xdg", "usd").symbol == "DOGE-USD"
    assert instruments.lookup("binance", "NOPEUSDT") is None


def test_user_pairs_from_config_file(tmp_path):
    cfg = tmp_path / "k2.toml"
    cfg.write_text(
        '[[instruments]]\nexchange = "binance"\nnative_symbol = "PEPEUSDT"\nbase = "PEPE"\nquote = "USDT"\n'
        '[[instruments]]\nexchange = "kraken"\nnative_symbol = "XBT/EUR"\nbase = "XBT"\nquote = "EUR"\n'
    )
    table = load_settings(cfg).instrument_table()
    assert len(table) == 36
    assert table.lookup("binance", "PEPEUSDT").symbol == "PEPE-USDT"
    assert table.lookup("kraken", "XBT/EUR").symbol == "BTC-EUR"


def test_bad_instrument_config_names_the_setting(tmp_path):
    cfg = tmp_path / "k2.toml"
    cfg.write_text('[[instruments]]\nexchange = "nasdaq"\nnative_symbol = "X"\nbase = "A"\nquote = "B"\n')
    with pytest.raises(ConfigError, match="instruments"):
        load_settings(cfg)


def test_user_pair_parses_end_to_end(tmp_path):
    from k2.model import trades_from_table
    from k2.model.trade import canonical_decimal
    from k2.venues.registry import make_parser

    table = InstrumentTable.default([Instrument.make("binance", "PEPEUSDT", "PEPE", "USDT")])
    res = make_parser("binance", table).parse(
        ['{"e":"trade","E":1,"s":"PEPEUSDT","t":9,"p":"0.00001234","q":"100000000.00000000","T":1784073600000,"m":false}'],
        [1784073600001000],
    )
    (t,) = trades_from_table(res.trades)
    assert (t.symbol, canonical_decimal(t.price), canonical_decimal(t.qty), t.side) == ("PEPE-USDT", "0.00001234", "100000000", "buy")
