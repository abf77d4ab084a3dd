"""`k2 up` offloads on its schedule while the feeds ingest; a final cycle leaves cold == hot."""

from __future__ import annotations

import asyncio

from k2.cold.catalog import open_catalog
from k2.cold.offload import Offloader
from k2.hot.chdb_store import ChdbStore
from k2.settings import load_settings
from tests.cold.test_offload import cold_trades, hot_trades
from tests.feeds.harness import run_with_sim


def test_up_offloads_while_ingesting(tmp_path):
    async def scenario(sim, platform):
        deadline = asyncio.get_running_loop().time() + 20
        while platform.offloads < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)

    out = asyncio.run(run_with_sim(tmp_path, ["binance", "coinbase"], scenario, cold={"offload_interval_s": 0.4}))
    assert out.platform.offloads >= 3 and out.platform.offload_errors == 0
    settings = load_settings(None, data_dir=str(tmp_path / "data"))
    with ChdbStore(settings.data_dir) as store:
        catalog = open_catalog(settings)
        before = len(cold_trades(catalog))
        assert before > 0  # the schedule moved trades while the feeds ran
        Offloader(store, catalog, settings).run_cycle()
        hot, cold = hot_trades(store), cold_trades(catalog)
        assert set(hot) == set(cold) and len(cold) >= before
