"""`k2 up --simulate`: the whole platform offline, stopped by SIGINT with everything stored; bad feed
settings fail at start-up naming the setting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from k2.cli import main
from k2.hot.chdb_store import ChdbStore


def test_up_simulate_runs_offline_and_drains_on_sigint(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({"K2_DATA_DIR": str(tmp_path / "data"), "K2_FEEDS__STATUS_INTERVAL_S": "0.3", "K2_API__PORT": "0"})
    p = subprocess.Popen(
        [sys.executable, "-m", "k2", "up", "--simulate", "--sim-rate", "100", "--exchanges", "binance,coinbase"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 40
        seen = ""
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            seen += line
            if "stored=" in line and "stored=0 " not in line:
                break
        else:
            raise AssertionError(seen[-2000:])
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-2000:]
    assert "stopped" in err
    with ChdbStore(tmp_path / "data") as store:
        rows = store.query_arrow("SELECT exchange, count() AS n FROM trades GROUP BY exchange ORDER BY exchange").to_pylist()
        assert [r["exchange"] for r in rows] == ["binance", "coinbase"] and all(r["n"] > 0 for r in rows)
        frames = store.query_arrow("SELECT count() FROM raw_frames").column(0)[0].as_py()
        assert frames > 0


def test_bad_feed_settings_fail_at_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("K2_KRAKEN_WS_URL", "http://not-a-websocket")
    assert main(["up", "--data-dir", str(tmp_path)]) == 2
    assert "kraken_ws_url" in capsys.readouterr().err
    monkeypatch.delenv("K2_KRAKEN_WS_URL")
    assert main(["up", "--exchanges", "binance,bitmex", "--data-dir", str(tmp_path)]) == 2
    assert "exchanges" in capsys.readouterr().err
    monkeypatch.setenv("K2_FEEDS__BACKOFF_MAX_S", "0.01")
    assert main(["up", "--data-dir", str(tmp_path)]) == 2
    assert "backoff" in capsys.readouterr().err
