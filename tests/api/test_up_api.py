"""The API as users run it: `k2 up --simulate` serving live data, and `k2 serve` over a data directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import httpx
import pytest

from k2.hot.chdb_store import ChdbStore


class Running:
    """A `k2` child process; its stderr collected by a thread; the API URL it prints."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.p = subprocess.Popen([sys.executable, "-m", "k2", *args], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.p.stderr,), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stdout,), daemon=True).start()
        self.url = self._wait_url()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def _wait_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(r"(?:API|serve:) (http://127\.0\.0\.1:\d+)", line)
                if m:
                    return m.group(1)
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no API URL printed:\n" + "\n".join(self.lines[-40:]))

    def stop(self, sig=signal.SIGINT, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def _env(data_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({"K2_DATA_DIR": str(data_dir), "K2_WRITER__MAX_DELAY_MS": "1000", "K2_WRITER__MAX_ROWS": "100000"})
    return env


def _until(fn, timeout: float = 40, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(every)
    raise AssertionError("condition not met in time")


def test_up_serves_live_data_stream_metrics_and_stops_cleanly(tmp_path):
    run = Running(["up", "--simulate", "--sim-rate", "60", "--port", "0"], _env(tmp_path / "data"))
    streamed: list[dict] = []
    try:
        http = httpx.Client(base_url=run.url, timeout=20)
        _until(lambda: http.get("/ready").status_code == 200)
        def all_live():
            s = http.get("/v1/status").json()
            ok = len(s["feeds"]) == 3 and all(f["state"] == "live" and f["trades"] > 0 for f in s["feeds"])
            return s if ok else None

        status = _until(all_live)
        assert {f["exchange"] for f in status["feeds"]} == {"binance", "kraken", "coinbase"}
        assert status["mode"] == "up" and status["writer"]["alive"] is True

        # the stream: subscribe, and collect what arrives while the feeds run
        import websockets.sync.client as wsc

        ws_url = run.url.replace("http://", "ws://") + "/v1/stream?symbols=binance:BTC-USDT,kraken:BTC-USD&channels=trades"
        with wsc.connect(ws_url, open_timeout=10) as ws:
            ack = json.loads(ws.recv(timeout=10))
            assert ack["symbols"] == ["binance:BTC-USDT", "kraken:BTC-USD"]
            deadline = time.monotonic() + 30
            while len(streamed) < 20 and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=10))
                assert msg["type"] == "trades"
                streamed += msg["data"]
        assert len(streamed) >= 20
        assert {(t["exchange"], t["symbol"]) for t in streamed} <= {("binance", "BTC-USDT"), ("kraken", "BTC-USD")}

        # every streamed trade is served by /v1/trades with the same values
        first = min(t["ts"] for t in streamed)
        last = max(t["ts"] for t in streamed) + 1
        served = {}
        for ex, sym in (("binance", "BTC-USDT"), ("kraken", "BTC-USD")):
            body = http.get("/v1/trades", params={"exchange": ex, "symbol": sym, "start": first, "end": last,
                                                  "limit": 100_000}).json()
            served.update({(t["exchange"], t["trade_id"]): t for t in body["trades"]})
        for t in streamed:
            assert served[(t["exchange"], t["trade_id"])] == t

        # candles served while ingesting equal a recomputation from the trades, through the SQL endpoint
        sql = ("SELECT toInt64(toUnixTimestamp(toStartOfMinute(ts))) * 1000000 AS bucket, count() AS n, "
               "sum(price * qty) AS q FROM trades WHERE exchange = 'binance' AND symbol = 'BTC-USDT' "
               "GROUP BY bucket ORDER BY bucket")
        # (the writer stores a batch a second here, so there are quiet moments; a read during an insert may see
        # the candle part before the trades part: ClickHouse commits a materialized view's part separately)
        def consistent():
            rows = http.post("/v1/sql", json={"sql": sql}).json()["rows"]
            params = {"exchange": "binance", "symbol": "BTC-USDT", "start": int(rows[0][0]),
                      "end": int(rows[-1][0]) + 60_000_000}
            candles = http.get("/v1/ohlcv/1m", params=params).json()["candles"]
            again = http.post("/v1/sql", json={"sql": sql}).json()["rows"]
            if again != rows or http.get("/v1/ohlcv/1m", params=params).json()["candles"] != candles:
                return None
            return rows, candles

        rows, candles = _until(consistent, timeout=30, every=0.05)
        assert [(int(r[0]), int(r[1]), Decimal(r[2])) for r in rows] == [
            (c["bucket"], c["trade_count"], Decimal(c["quote_volume"])) for c in candles]

        # metrics: the feeds and the API are exported
        text = http.get("/metrics").text
        assert re.search(r'^k2_feed_up\{exchange="binance"\} 1\.0$', text, re.M), text[:2000]
        assert 'k2_api_requests_total{' in text
        assert http.get("/").status_code == 200 and "<html" in http.get("/").text.lower()
        http.close()
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.lines[-40:])
    # everything streamed was stored (the process drained before it exited)
    with ChdbStore(tmp_path / "data") as store:
        ids = {(r["exchange"], r["trade_id"]) for r in store.query_arrow(
            "SELECT toString(exchange) AS exchange, trade_id FROM trades WHERE symbol IN ('BTC-USDT', 'BTC-USD')").to_pylist()}
    assert {(t["exchange"], t["trade_id"]) for t in streamed} <= ids


def test_serve_answers_from_a_data_dir_and_stops_on_sigterm(data_dir):
    run = Running(["serve", "--port", "0"], _env(data_dir))
    try:
        http = httpx.Client(base_url=run.url, timeout=20)
        _until(lambda: http.get("/ready").status_code == 200)
        body = http.get("/v1/ohlcv/1d", params={"exchange": "kraken", "symbol": "BTC-USD", "start": "2026-07-15",
                                               "end": "2026-07-20"}).json()
        assert len(body["candles"]) == 5 and all(c["trade_count"] > 0 for c in body["candles"])
        status = http.get("/v1/status").json()
        assert status["mode"] == "serve" and status["feeds"] == [] and status["tiers"]["hot"]["trades"] > 0
        assert http.get("/v1/exchanges").json()["exchanges"][0]["state"] is None
        assert "k2_store_rows" in http.get("/metrics").text or "k2_" in http.get("/metrics").text
        http.close()
    finally:
        code = run.stop(signal.SIGTERM)
    assert code == 0, "\n".join(run.lines[-40:])


def test_port_in_use_fails_at_start_naming_the_setting(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "k2", "serve", "--port", str(port)], env=_env(tmp_path / "d"),
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "api.port" in p.stderr and str(port) in p.stderr


@pytest.mark.parametrize("port", ["-1", "70000", "http"])
def test_bad_port_option(port, tmp_path):
    p = subprocess.run([sys.executable, "-m", "k2", "serve", "--port", port], env=_env(tmp_path / "d"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--port" in p.stderr


def test_real_prometheus_scrapes_k2_up(tmp_path):
    """deploy/prometheus/prometheus.yml, pointed at a running `k2 up`, scrapes its /metrics: feeds, store, API."""
    from tests.observability.test_prometheus_scrape import prometheus_against, wait_until

    run = Running(["up", "--simulate", "--sim-rate", "30", "--port", "0"], _env(tmp_path / "data"))
    try:
        target = run.url.removeprefix("http://")
        deadline = time.monotonic() + 60
        log = tmp_path / "prom" / "prometheus.log"
        with prometheus_against(target, tmp_path / "prom") as (prom, proc):
            def has(expr):
                return lambda: prom.query(expr).get("data", {}).get("result")

            [up] = wait_until(has('up{job="k2"} == 1'), "k2 scraped", proc, log, deadline)
            assert up["metric"]["instance"] == target
            feeds = wait_until(has('k2_feed_up == 1'), "three live feeds", proc, log, deadline)
            while len(feeds) < 3 and time.monotonic() < deadline:
                time.sleep(0.5)
                feeds = prom.query("k2_feed_up == 1")["data"]["result"]
            assert {r["metric"]["exchange"] for r in feeds} == {"binance", "kraken", "coinbase"}
            stored = wait_until(has('k2_writer_trades_stored_total > 0'), "stored trades", proc, log, deadline)
            assert float(stored[0]["value"][1]) > 0
            # Prometheus's own scrapes are API requests: the API metrics count the /metrics route
            api = wait_until(has('k2_api_requests_total{route="/metrics",status="200"} > 0'), "API metrics",
                             proc, log, deadline)
            assert api
    finally:
        assert run.stop() == 0
