"""`k2 offload` and `k2 maintain` from the command line, on the shipped sample."""

from __future__ import annotations

from pathlib import Path

from k2.cli import main

SAMPLE = Path(__file__).parents[2] / "samples" / "sample.jsonl.gz"


def test_offload_then_maintain(tmp_path, capsys):
    d = ["--data-dir", str(tmp_path / "data")]
    assert main(["replay", str(SAMPLE), *d]) == 0
    capsys.readouterr()
    assert main(["offload", *d]) == 0
    out = capsys.readouterr().out
    assert "trades offloaded   20000" in out and "candles written    1m=34" in out
    assert main(["offload", *d]) == 0
    assert "trades offloaded   0" in capsys.readouterr().out  # exactly once
    assert main(["maintain", *d]) == 0
    out = capsys.readouterr().out
    assert " 0 MISMATCH" in out
    # the sample is from 2026-07: past the 7-day hot retention, so the offload moved it out of the hot tier
    # (all but the row holding the newest ingest_seq), and the views read it from the cold tier
    assert main(["sql", "SELECT count() FROM trades_store", "--format", "csv", *d]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "1"
    assert main(["sql", "SELECT count(), uniqExact(exchange, symbol, trade_id) FROM trades", "--format", "csv", *d]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "20000,20000"
    assert main(["sql", "SELECT sum(trade_count) FROM ohlcv_1d", "--format", "csv", *d]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "20000"
    assert main(["sql", "SELECT count() FROM trades", "--format", "csv", "--as-of", "2200-01-01", *d]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "20000"
