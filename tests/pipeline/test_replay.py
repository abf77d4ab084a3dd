"""k2 replay: idempotent, overlapping files stored once, bad input dead-lettered without losing good trades."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from k2.capture import CaptureWriter
from k2.capture.export import export_capture
from k2.capture.synth import write_synthetic_capture
from k2.cli import main
from k2.model.trade import TRADE_SCHEMA, trades_from_table
from k2.pipeline.replay import replay_files
from tests.candles import normalize, recompute, stored

SAMPLE = Path(__file__).parents[2] / "samples" / "sample.jsonl.gz"


def count(store, sql):
    return store.query_arrow(sql).column(0)[0].as_py()


def test_replay_twice_stores_nothing_twice(tmp_path, store, parsers):
    cap = tmp_path / "c.jsonl.zst"
    write_synthetic_capture(cap, 5_000, seed=3)
    first = replay_files([cap], store, parsers)
    assert first.trades_parsed == 5_000 and first.trades_stored == 5_000 and first.duplicates == 0
    assert first.dead_letters == 0
    second = replay_files([cap], store, parsers)
    assert second.trades_stored == 0 and second.duplicates == 5_000
    assert count(store, "SELECT count() FROM trades") == 5_000
    assert count(store, "SELECT count() FROM (SELECT exchange, symbol, trade_id FROM trades GROUP BY ALL HAVING count() > 1)") == 0
    assert count(store, "SELECT sum(trade_count) FROM ohlcv_1m") == 5_000
    assert count(store, "SELECT sum(trade_count) FROM ohlcv_1d") == 5_000
    # raw layer: every frame, and a replay of the same frames collapses on merge
    assert count(store, "SELECT count() FROM raw_frames FINAL") == first.frames


def test_repeated_lines_in_one_insert_collapse_in_the_raw_layer_and_export(tmp_path, store, parsers):
    # raw frames are inserted without insert-time deduplication (optimize_on_insert = 0): identical lines of one
    # insert stay as rows until a merge, and FINAL (which capture export reads with) shows each frame once
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 2_000, seed=11)
    lines = cap.read_bytes().splitlines(keepends=True)
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(b"".join(line + line for line in lines))
    s = replay_files([doubled], store, parsers)
    assert s.frames == 2 * len(lines) and s.trades_stored == 2_000
    assert count(store, "SELECT count() FROM raw_frames FINAL") == len(lines)
    out = tmp_path / "export.jsonl"
    assert export_capture(store, out, 0, 2**62) == len(lines)
    got = sorted(json.loads(x)["frame"] for x in out.read_text().splitlines())
    assert got == sorted(json.loads(x)["frame"] for x in lines)


def test_overlapping_files_store_each_trade_once(tmp_path, store, parsers):
    full = tmp_path / "full.jsonl"
    write_synthetic_capture(full, 3_000, seed=5)
    lines = full.read_bytes().splitlines(keepends=True)
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"
    with gzip.open(a, "wb") as f:
        f.writelines(lines[: len(lines) * 2 // 3])
    b.write_bytes(b"".join(lines[len(lines) // 3 :]))
    s = replay_files([a, b], store, parsers)
    assert s.trades_stored == 3_000
    assert s.duplicates == s.trades_parsed - 3_000 > 0
    trades = trades_from_table(store.query_arrow("SELECT * EXCEPT ingest_seq FROM trades").select(TRADE_SCHEMA.names).cast(TRADE_SCHEMA))
    for tf in ("1m", "5m", "1h", "1d"):
        assert normalize(stored(store, tf)) == normalize(recompute(trades, tf))


def test_malformed_capture_dead_letters_and_keeps_good_trades(tmp_path, store, parsers):
    good = [
        '{"e":"trade","E":1784073600001,"s":"BTCUSDT","t":100,"p":"117234.56000000","q":"0.00150000","T":1784073600000,"m":true,"M":true}',
        '{"e":"trade","E":1784073600001,"s":"BTCUSDT","t":101,"p":"117234.57000000","q":"0.25000000","T":1784073600000,"m":false,"M":true}',
    ]
    path = tmp_path / "bad.jsonl"
    with CaptureWriter(path) as w:
        w.write("binance", 1784073600002000, good[0], "c1")
        w.write("binance", 1784073600002000, good[0][:40], "c1")  # truncated JSON
        w.write("binance", 1784073600002000, good[0].replace('"p":"117234.56000000"', '"p":117234.56'), "c1")  # mistyped
        w.write("binance", 1784073600002000, good[0].replace('"q":"0.00150000"', '"q":"0"').replace('"t":100', '"t":102'), "c1")
        w.write("binance", 1784073600002000, good[0].replace('"T":1784073600000', '"T":42').replace('"t":100', '"t":103'), "c1")
        w.write("binance", 1784073600002000, '{"e":"depthUpdate","E":1,"s":"BTCUSDT"}', "c1")  # unknown type: ignored
        w.write("binance", 1784073600002000, '{"result":null,"id":7}', "c1")  # ack: control
        w.write("kraken", 1784073600002000, '{"channel":"trade","type":"bogus","data":[]}', "c2")  # unknown event type
        w.write("binance", 1784073600002000, good[1], "c1")
    with open(path, "ab") as f:
        f.write(b'{"exchange":"binance","ts_recv":1784073600002000,"frame":"\xff\xfe bad utf8","conn":"c1"}\n')
        f.write(b'not json at all\n')
        f.write(b'{"exchange":"nasdaq","ts_recv":1784073600002000,"frame":"{}"}\n')
    s = replay_files([path], store, parsers)
    assert s.trades_stored == 2
    assert s.dead_letters == 8
    assert s.ignored == 1 and s.control == 1
    assert count(store, "SELECT count() FROM trades") == 2
    reasons = store.query_arrow("SELECT reason FROM dead_letters ORDER BY reason").to_pylist()
    text = "\n".join(r["reason"] for r in reasons)
    frames = store.query_arrow(
        "SELECT frame FROM dead_letters SETTINGS output_format_arrow_string_as_string = 0"
    ).column("frame").to_pylist()
    for expected in ("invalid JSON", "bad trade frame", "qty: not positive", "timestamp out of range",
                     "unknown event type 'bogus'", "invalid UTF-8", "bad capture line", "unknown exchange 'nasdaq'"):
        assert expected in text, (expected, text)
    raw = set(frames)
    assert good[0][:40].encode() in raw  # the raw text is kept
    assert any(b"\xff\xfe bad utf8" in f for f in raw)
    # replaying the same bad file adds no trades and no visible duplicate dead letters
    replay_files([path], store, parsers)
    assert count(store, "SELECT count() FROM trades") == 2
    assert count(store, "SELECT count() FROM dead_letters") == 8


def test_cli_replay_of_shipped_sample_and_sql(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["replay", str(SAMPLE), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "trades stored     20000" in out and "dead letters      3" in out
    assert main(["replay", str(SAMPLE), "--data-dir", str(data)]) == 0
    assert "trades stored     0" in capsys.readouterr().out
    assert main(["sql", "SELECT count() AS n FROM trades", "--format", "csv", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out == '"n"\n20000\n'
    assert main(["sql", "SELECT symbol, trade_count FROM ohlcv_1d WHERE exchange = 'binance' ORDER BY symbol LIMIT 1",
                 "--format", "json", "--data-dir", str(data)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["symbol"] == "ADA-USDT" and int(rows[0]["trade_count"]) > 0
    assert main(["sql", "DELETE FROM trades_store WHERE 1", "--data-dir", str(data)]) == 2
    assert "only SELECT" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--data-dir", str(data)]) == 1


@pytest.mark.parametrize("env_dir", [True, False])
def test_data_dir_resolution(tmp_path, monkeypatch, env_dir):
    monkeypatch.chdir(tmp_path)
    if env_dir:
        monkeypatch.setenv("K2_DATA_DIR", str(tmp_path / "envdir"))
    else:
        monkeypatch.delenv("K2_DATA_DIR", raising=False)
    assert main(["sql", "SELECT 1"]) == 0
    assert (tmp_path / ("envdir" if env_dir else "k2-data") / "hot").is_dir()
