"""`k2 capture export` writes what the feeds received (WebSocket frames and REST answers); replaying it
reproduces the same trades."""

from __future__ import annotations

import asyncio

from k2.cli import main
from k2.hot.chdb_store import ChdbStore
from tests.feeds.harness import run_with_sim


def trade_keys(data_dir) -> set:
    with ChdbStore(data_dir) as store:
        rows = store.query_arrow(
            "SELECT exchange, symbol, trade_id, toString(price) AS p, toString(qty) AS q, toString(side) AS s, "
            "toUnixTimestamp64Micro(ts) AS ts FROM trades"
        ).to_pylist()
    return {tuple(r.values()) for r in rows}


def test_export_then_replay_gives_the_same_trades(tmp_path, capsys):
    async def scenario(sim, platform):
        await asyncio.sleep(0.5)
        sim.skip_ids("kraken", "BTC-USD", 4)  # filled over REST: the export must carry the REST answers too
        sim.send_malformed("binance", 2)
        await asyncio.sleep(1.5)

    asyncio.run(run_with_sim(tmp_path, ["binance", "kraken"], scenario))
    live = trade_keys(tmp_path / "data")
    assert len(live) > 100
    out = tmp_path / "export.jsonl.zst"
    assert main(["capture", "export", str(out), "--start", "2000-01-01", "--end", "2200-01-01",
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert "frames to" in capsys.readouterr().out
    assert main(["replay", str(out), "--data-dir", str(tmp_path / "replayed")]) == 0
    assert trade_keys(tmp_path / "replayed") == live
    with ChdbStore(tmp_path / "replayed") as store:
        assert store.query_arrow("SELECT count() FROM dead_letters").column(0)[0].as_py() >= 2
        rest = store.query_arrow("SELECT count() FROM raw_frames WHERE conn = 'kraken-rest'").column(0)[0].as_py()
        assert rest >= 1


def test_export_by_exchange_and_time_range(tmp_path, capsys):
    async def scenario(sim, platform):
        await asyncio.sleep(1.0)

    asyncio.run(run_with_sim(tmp_path, ["binance", "kraken"], scenario))
    out = tmp_path / "b.jsonl"
    assert main(["capture", "export", str(out), "--start", "2000-01-01T00:00:00Z", "--end", "2200-01-01",
                 "--exchange", "kraken", "--data-dir", str(tmp_path / "data")]) == 0
    text = out.read_text()
    assert '"exchange":"kraken"' in text and '"exchange":"binance"' not in text
    empty = tmp_path / "e.jsonl"
    assert main(["capture", "export", str(empty), "--start", "2001-01-01", "--end", "2001-01-02",
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert empty.read_text() == ""
    assert main(["capture", "export", str(empty), "--start", "yesterday", "--end", "2001-01-02",
                 "--data-dir", str(tmp_path / "data")]) == 2
    assert "--start" in capsys.readouterr().err
