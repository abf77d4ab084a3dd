"""Metrics of a running `k2 up` (feeds on the exchange simulator, bus, hot writer, chdb, offload loop), scraped
from another thread while everything works, as the API will scrape it."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from k2.observability import Metrics
from tests.feeds.harness import run_with_sim, wait_for

from .conftest import scrape, value

EXCHANGES = ["binance", "kraken", "coinbase"]


def test_scrape_a_running_platform(tmp_path):
    seen: dict = {}

    async def scenario(sim, platform):
        metrics = Metrics(CollectorRegistry(), platform=platform, store=platform.store)
        await wait_for(lambda: platform.offloads >= 1 and platform.writer.stats.trades_stored > 0, 30,
                       "an offload cycle and stored trades")
        scrapes = []
        for _ in range(5):  # while the feeds, the writer and the offload loop work
            t0 = time.perf_counter()
            scrapes.append(await asyncio.to_thread(scrape, metrics))
            seen.setdefault("seconds", []).append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)
        seen["scrapes"] = scrapes
        seen["live_trades"] = {ex: s.status.trades for ex, s in platform.sessions.items()}

    out = asyncio.run(run_with_sim(tmp_path, EXCHANGES, scenario, cold={"offload_interval_s": 0.5}))
    first, last = seen["scrapes"][0], seen["scrapes"][-1]
    for s in seen["scrapes"]:
        assert all(v == 0 for v in s["k2_metrics_scrape_errors_total"].values()), s["k2_metrics_scrape_errors_total"]
        assert value(s, "k2_writer_up") == 1
        assert value(s, "k2_bus_capacity_batches") == 4096
        # one scrape is one consistent reading of the store and the offload watermark
        assert value(s, "k2_offload_behind_rows") == (
            value(s, "k2_store_last_ingest_seq") - value(s, "k2_offload_watermark_ingest_seq"))
        assert value(s, "k2_offload_watermark_ingest_seq") > 0
    for ex in EXCHANGES:
        assert value(last, "k2_feed_up", exchange=ex) == 1
        assert value(last, "k2_feed_state", exchange=ex, state="live") == 1
        assert value(last, "k2_feed_frames_total", exchange=ex) > 0
        assert 0 < value(last, "k2_feed_trades_total", exchange=ex) <= seen["live_trades"][ex]
        assert value(first, "k2_feed_trades_total", exchange=ex) <= value(last, "k2_feed_trades_total", exchange=ex)
        assert value(last, "k2_feed_last_frame_age_seconds", exchange=ex) < 10
        assert value(last, "k2_feed_dead_letters_total", exchange=ex) == 0
    assert value(last, "k2_store_rows", table="trades_store") >= value(first, "k2_store_rows", table="trades_store") > 0
    # (the writer's counters are read before the store in a scrape, so the store may be a batch ahead)
    assert value(last, "k2_writer_trades_stored_total") > 0 and value(last, "k2_store_last_ingest_seq") > 0
    assert value(last, "k2_offload_cycles_total") >= 1
    assert value(last, "k2_offload_errors_total") == 0
    assert out.platform.offload_errors == 0
    assert max(seen["seconds"]) < 2.0  # sanity bound under full load; the cost is measured in the report
