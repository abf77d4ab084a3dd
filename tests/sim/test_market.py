"""Generation, history and text formatting, without sockets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from k2.capture.synth import PROFILES
from k2.model.instrument import InstrumentTable
from k2.model.trade import canonical_decimal
from k2.sim import SimConfig
from k2.sim.fmt import decimal_product, go_time, pad, rfc3339_nano, rfc3339_trimmed, seconds_literal
from k2.sim.kraken import kraken_pair_name
from k2.sim.limits import RollingWeight, SlidingCounter, TokenBucket
from k2.sim.market import Market


def market(exchange: str = "binance", seed: int = 7, keep: int = 200_000) -> Market:
    insts = [(k, i) for k, i in enumerate(InstrumentTable.default()) if i.exchange == exchange]
    return Market(exchange, insts, seed, keep)


def strip_time(trades):
    return [(t.symbol, t.trade_id, t.price, t.qty, t.side) for t in trades]


def test_sequence_depends_on_seed_only_not_on_tick_batching():
    a, b, c = market(), market(), market(seed=8)
    ga = a.generate(3000)
    gb = [g for n in (1, 7, 500, 1492, 1000) for g in b.generate(n)]
    assert strip_time(g.trade for g in ga) == strip_time(g.trade for g in gb)
    assert strip_time(g.trade for g in ga) != strip_time(g.trade for g in c.generate(3000))


def test_ids_contiguous_prices_on_tick_sizes_positive_times_monotonic():
    m = market("kraken")
    trades = [g.trade for g in m.generate(4000)]
    by_symbol: dict[str, list] = {}
    for t in trades:
        by_symbol.setdefault(t.symbol, []).append(t)
    assert len(by_symbol) == 11  # every Kraken pair trades (weights > 0)
    shared = 0
    for symbol, items in by_symbol.items():
        ids = [t.trade_id for t in items]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        base = symbol.split("-")[0]
        _, pdec, qdec, _ = PROFILES[base]
        for t in items:
            price, qty = Decimal(t.price), Decimal(t.qty)
            assert price > 0 and qty > 0
            assert -price.as_tuple().exponent <= pdec and -qty.as_tuple().exponent <= qdec
            assert t.price == canonical_decimal(price) and t.qty == canonical_decimal(qty)
            assert t.side in ("buy", "sell")
        ts = [t.ts_us for t in items]
        assert ts == sorted(ts)
        shared += sum(1 for x, y in zip(ts, ts[1:]) if x == y)
    assert shared > 100  # bursts of trades sharing one match time
    assert {t.side for t in trades} == {"buy", "sell"}
    assert m.emitted() == sorted(trades, key=lambda t: (list(m.books).index(t.symbol), t.trade_id))


def test_skip_ids_fillable_and_unfillable_bookkeeping():
    m = market("coinbase")
    book = m.book("BTC-USD")
    book.skips.append([3, True])
    book.skips.append([4, False])
    gen = [g for g in m.generate(2000) if g.trade.symbol == "BTC-USD"]
    hidden = [g.trade.trade_id for g in gen if not g.ws]
    assert hidden == list(range(book.first_id, book.first_id + 7))
    assert m.unfillable() == [("BTC-USD", book.first_id + 3, book.first_id + 6)]
    kept = [t.trade_id for t in m.emitted() if t.symbol == "BTC-USD"]
    assert kept[:4] == [book.first_id, book.first_id + 1, book.first_id + 2, book.first_id + 7]
    assert book.last_id == gen[-1].trade.trade_id
    assert m.emitted_total == 2000 - 4


def test_history_keeps_the_last_n_per_symbol_and_queries():
    m = market("binance", keep=50)
    m.generate(5000)
    book = m.book("BTC-USDT")
    kept = book.kept()
    assert len(kept) == 50 and kept[-1].trade_id == book.last_id
    assert book.from_id(0, 10) == kept[:10]  # older than the kept history: starts at the oldest kept
    assert book.from_id(kept[5].trade_id, 3) == kept[5:8]
    assert book.from_id(book.last_id + 1, 10) == []
    assert book.latest(5) == kept[-5:]
    assert book.id_range(kept[10].trade_id, None, 4, oldest=True) == kept[11:15]
    assert book.id_range(None, kept[10].trade_id, 4, oldest=False) == kept[6:10]
    assert book.after_time(kept[-1].ts_us, 10) == []
    assert all(t.ts_us > kept[20].ts_us for t in book.after_time(kept[20].ts_us, 100))


def test_text_formatting_is_exact():
    assert pad("1.5", 8) == "1.50000000" and pad("7", 2) == "7.00" and pad("3", 0) == "3"
    assert seconds_literal(1_688_669_597_827_736) == "1688669597.827736"
    assert seconds_literal(1_688_669_597_000_001) == "1688669597.000001"
    assert rfc3339_trimmed(1_415_348_367_028_000) == "2014-11-07T08:19:27.028Z"
    assert rfc3339_trimmed(1_415_348_367_000_000) == "2014-11-07T08:19:27Z"
    assert rfc3339_nano(1_687_552_286_122_969_572) == "2023-06-23T20:31:26.122969572Z"
    assert rfc3339_nano(1_676_000_000_100_000_000) == "2023-02-10T03:33:20.1Z"
    assert go_time(1_687_552_316_121_961_769, 91_717_525_857_105) == (
        "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105"
    )
    assert decimal_product("4.000001", "12") == "48.000012"
    assert decimal_product("117234.56", "0.00000001") == "0.0011723456"


def test_kraken_pair_names():
    assert kraken_pair_name("BTC", "USD") == "XXBTZUSD"
    assert kraken_pair_name("ETH", "USD") == "XETHZUSD"
    assert kraken_pair_name("XRP", "USD") == "XXRPZUSD"
    assert kraken_pair_name("LTC", "USD") == "XLTCZUSD"
    assert kraken_pair_name("DOGE", "USD") == "XDGUSD"
    assert kraken_pair_name("SOL", "USD") == "SOLUSD"
    assert kraken_pair_name("BTC", "USDT") == "XBTUSDT"


def test_limits():
    bucket = TokenBucket(rate=10, burst=20)
    assert sum(bucket.take(0.0) for _ in range(30)) == 20
    assert bucket.take(0.05) is False and bucket.take(0.1) is True
    weight = RollingWeight(limit=100)
    for t in range(4):
        assert weight.fits(t, 25)
        weight.add(t, 25)
    assert not weight.fits(4.0, 25) and weight.used(4.0) == 100
    assert weight.retry_after(4.0, 25) == 56  # the first 25 leave the window at t=60
    assert weight.used(60.0) == 75
    counter = SlidingCounter(1.0)
    assert [counter.hit(t) for t in (0.0, 0.5, 0.9, 1.2, 2.3)] == [1, 2, 3, 3, 1]


def test_config_validation():
    with pytest.raises(ValueError):
        SimConfig(exchanges=("binance", "ftx"))
    with pytest.raises(ValueError):
        SimConfig(tick_s=0)
    assert SimConfig().instrument_table().for_exchange("kraken")[0].native_symbol == "BTC/USD"
