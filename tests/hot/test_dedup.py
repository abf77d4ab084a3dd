"""Deduplication on (exchange, symbol, trade_id) in the writer's insert path, case by case (the property test in
test_candles_property.py covers random streams)."""

from __future__ import annotations

from decimal import Decimal

from k2.hot.chdb_store import _first_occurrences, _PairGroups
from k2.model.trade import Trade
from tests.hot.test_candles_property import T0, to_table


def trade(ex, sym, tid, price="1.5"):
    native = {"binance": sym.replace("-", ""), "kraken": sym.replace("-", "/"), "coinbase": sym}[ex]
    return Trade(ex, sym, native, tid, Decimal(price), Decimal("0.25"), "buy", T0 + tid, T0 + tid)


def stored(store):
    return store.query_arrow(
        "SELECT exchange, symbol, trade_id, toString(price) AS price FROM trades ORDER BY exchange, symbol, trade_id"
    ).to_pylist()


def test_groups_of_a_batch_in_feed_order():
    batch = to_table([trade("kraken", "BTC-USD", 7), trade("coinbase", "BTC-USD", 7), trade("kraken", "ETH-USD", 3),
                      trade("kraken", "BTC-USD", 9), trade("coinbase", "BTC-USD", 8)]).combine_chunks()
    g = _PairGroups(batch)
    assert g.increasing
    got = {pair: ids.tolist() for pair, ids, _ in g.groups()}
    assert got == {"kraken\x1fBTC-USD": [7, 9], "coinbase\x1fBTC-USD": [7, 8], "kraken\x1fETH-USD": [3]}
    assert _first_occurrences(g).all()


def test_a_pair_out_of_order_or_repeated_is_not_increasing_and_its_first_occurrence_wins():
    batch = to_table([trade("kraken", "BTC-USD", 9, "1"), trade("kraken", "ETH-USD", 1),
                      trade("kraken", "BTC-USD", 7, "2"), trade("kraken", "BTC-USD", 9, "3")]).combine_chunks()
    g = _PairGroups(batch)
    assert not g.increasing
    assert _first_occurrences(g).tolist() == [True, True, True, False]
    repeated = to_table([trade("binance", "BTC-USDT", 5), trade("binance", "BTC-USDT", 5)]).combine_chunks()
    assert not _PairGroups(repeated).increasing


def test_ids_below_the_highest_stored_one_are_looked_up_and_only_stored_ones_dropped(store):
    store.insert_trades(to_table([trade("binance", "BTC-USDT", i) for i in [*range(1, 11), 20]]))
    # a backfill in feed order, entirely below the highest stored id (20): the gap 11..19 is new
    res = store.insert_trades(to_table([trade("binance", "BTC-USDT", i, "2.5") for i in range(11, 20)]))
    assert (res.inserted, res.duplicates) == (9, 0)
    # across the highest stored id: 20 is stored, 21..25 are new, and so is another pair's id 20
    res = store.insert_trades(to_table([trade("binance", "BTC-USDT", i, "3.5") for i in range(18, 26)]
                                       + [trade("binance", "ETH-USDT", 20)]))
    assert (res.inserted, res.duplicates) == (6, 3)
    rows = stored(store)
    assert [r["trade_id"] for r in rows if r["symbol"] == "BTC-USDT"] == list(range(1, 26))
    price = {r["trade_id"]: r["price"] for r in rows if r["symbol"] == "BTC-USDT"}
    assert (price[10], price[11], price[19], price[20], price[21]) == ("1.5", "2.5", "2.5", "1.5", "3.5")
    assert [(r["symbol"], r["trade_id"]) for r in rows if r["symbol"] != "BTC-USDT"] == [("ETH-USDT", 20)]


def test_the_same_symbol_and_id_on_two_exchanges_are_two_trades(store):
    res = store.insert_trades(to_table([trade("kraken", "BTC-USD", 5), trade("coinbase", "BTC-USD", 5)]))
    assert (res.inserted, res.duplicates) == (2, 0)
    res = store.insert_trades(to_table([trade("coinbase", "BTC-USD", 5), trade("kraken", "BTC-USD", 6)]))
    assert (res.inserted, res.duplicates) == (1, 1)
    assert [(r["exchange"], r["trade_id"]) for r in stored(store)] == [("coinbase", 5), ("kraken", 5), ("kraken", 6)]
