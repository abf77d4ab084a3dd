"""A process killed between the trades part and a candle part leaves candles short (materialized views are not
transactional with their source insert). Opening the store finds such months and rebuilds them."""

from __future__ import annotations

from decimal import Decimal

from k2.hot.chdb_store import ChdbStore
from k2.model.trade import Trade
from tests.hot.test_candles_property import STORE_TABLES, check, to_table

JUNE, JULY = 1_781_049_600_000_000, 1_782_864_000_000_000  # 2026-06-10 and 2026-07-01 00:00 UTC


def trades():
    out = []
    for k, base in enumerate((JUNE, JULY)):
        for i in range(1, 300):
            out.append(
                Trade("coinbase", "BTC-USD", "BTC-USD", k * 1000 + i, Decimal(60_000 + i % 17).scaleb(-1),
                      Decimal(i).scaleb(-4), "buy" if i % 2 else "sell", base + i * 7_000_000_000, base)
            )
    return out


def test_lost_candle_parts_are_rebuilt_on_open(tmp_path):
    data = trades()
    s = ChdbStore(tmp_path / "d")
    assert s.repaired_months == []
    s.insert_trades(to_table(data))
    assert s.check_candles() == []
    # simulate parts lost by a kill: one month of 5m candles, the other month of 1m (not cascaded) and 1d
    s.execute("ALTER TABLE ohlcv_5m_store DROP PARTITION 202606")
    s.execute("ALTER TABLE ohlcv_1m_store DROP PARTITION 202607")
    s.execute("ALTER TABLE ohlcv_1d_store DROP PARTITION 202607")
    assert s.check_candles() == [202606, 202607]
    s.close()
    s = ChdbStore(tmp_path / "d")
    assert s.repaired_months == [202606, 202607]
    assert s.check_candles() == []
    for t in STORE_TABLES:
        s.execute(f"OPTIMIZE TABLE {t} FINAL")
    check(s, data)
    s.close()
