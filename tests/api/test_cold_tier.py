"""Answers span both tiers: after an offload and hot retention, the API serves the cold rows as before."""

from __future__ import annotations

from fastapi.testclient import TestClient

from k2.api.app import create_app
from k2.api.server import build_context
from k2.capture.synth import write_synthetic_capture
from k2.cold.catalog import open_catalog
from k2.cold.offload import Offloader
from k2.cold.tiers import apply_retention
from k2.hot.chdb_store import ChdbStore
from k2.pipeline.replay import replay_files
from k2.settings import load_settings

T0 = 1_784_073_600_000_000
DAY = 86_400_000_000
NOW = T0 + 20 * DAY


def _answers(client) -> dict:
    out = {}
    for tf in ("1m", "1h", "1d", "4h", "1w"):
        out[tf] = client.get(f"/v1/ohlcv/{tf}", params={"exchange": "kraken", "symbol": "BTC-USD", "start": T0,
                                                       "end": T0 + 15 * DAY}).json()["candles"]
    pages, cursor = [], None
    while True:
        body = client.get("/v1/trades", params={"symbol": "ETH-USD", "start": T0, "end": T0 + 15 * DAY, "limit": 200,
                                                **({"cursor": cursor} if cursor else {})}).json()
        pages += body["trades"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    out["trades"] = pages
    out["sql"] = client.post("/v1/sql", json={"sql": "SELECT exchange, count() AS n, sum(price * qty) AS q FROM trades "
                                                     "GROUP BY exchange ORDER BY exchange"}).json()["rows"]
    return out


def test_api_answers_are_the_same_after_offload_and_retention(tmp_path, parsers):
    settings = load_settings(None, data_dir=str(tmp_path / "data"),
                             cold={"hot_retention_days": 15, "hot_candle_retention_days": 12})
    store = ChdbStore(settings.data_dir)
    try:
        for n, (start, seed) in enumerate(((T0, 31), (T0 + 10 * DAY, 32))):
            cap = tmp_path / f"c{n}.jsonl"
            write_synthetic_capture(cap, 3_000, seed=seed, rate=40.0, start_us=start, id_offset=n * 500_000)
            replay_files([cap], store, parsers)

        def api():
            ctx = build_context(settings, store, mode="serve", with_metrics=False)
            ctx.cold_stats.ttl_s = 0
            return TestClient(create_app(ctx))

        with api() as client:
            before = _answers(client)
        catalog = open_catalog(settings)
        Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
        res = apply_retention(store, catalog, settings, NOW)
        assert res.trades_dropped > 0  # the older half now lives only in the cold tier
        hot = store.query_arrow("SELECT count() AS n FROM trades_store").to_pylist()[0]["n"]
        assert hot < 6_000
        with api() as client:
            after = _answers(client)
            status = client.get("/v1/status").json()
        assert len(before["trades"]) > 200
        days = {c["bucket"] // DAY for c in before["1m"]}
        assert days == {T0 // DAY, T0 // DAY + 10}  # one day now cold only, one still hot
        assert after == before
        assert status["tiers"]["hot"]["trades"] == hot
        assert status["tiers"]["cold"]["trades"] == 6_000 and status["tiers"]["cold"]["offload_watermark"] > 0
    finally:
        store.close()
