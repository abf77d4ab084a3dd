"""An API over a real store: a synthetic capture spanning ~12 days of the 34 default pairs, replayed once per
module into a real chdb store (chdb allows one open store per process, so a module holds one at a time)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from k2.capture.synth import write_synthetic_capture
from k2.hot.chdb_store import ChdbStore
from k2.model.trade import TRADE_SCHEMA
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from k2.venues.registry import make_parsers

START_US = 1_784_073_600_000_000  # 2026-07-15 00:00 UTC (a Wednesday)
N_TRADES = 30_000
SPAN_S = 12 * 86_400


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A data directory holding the replayed synthetic capture (built once; copied per module)."""
    base = tmp_path_factory.mktemp("api-synth")
    cap = base / "synth.jsonl.gz"
    settings = load_settings(data_dir=str(base / "data"))
    inst = settings.instrument_table()
    write_synthetic_capture(cap, N_TRADES, instruments=inst, seed=11, start_us=START_US, rate=N_TRADES / SPAN_S)
    store = ChdbStore(settings.data_dir)
    try:
        replay_files([cap], store, make_parsers(inst))
    finally:
        store.close()
    return base / "data"


@pytest.fixture(scope="module")
def data_dir(synth_dir, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("api-data") / "data"
    shutil.copytree(synth_dir, dst, symlinks=True)  # chdb links metadata and tables relatively
    return dst


@pytest.fixture(scope="module")
def env(data_dir):
    """(TestClient of the API over the module's store, the store, the ApiContext)."""
    from fastapi.testclient import TestClient

    from k2.api.app import create_app
    from k2.api.server import build_context

    store = ChdbStore(data_dir)
    ctx = build_context(make_settings(data_dir), store, mode="serve", with_metrics=False)
    with TestClient(create_app(ctx)) as client:
        yield client, store, ctx
    store.close()


def make_settings(data_dir: Path, **api) -> object:
    s = load_settings(data_dir=str(data_dir))
    if api:
        s = s.with_api(**api)
    return s


def all_trades(store) -> list[SimpleNamespace]:
    rows = store.query_arrow(
        "SELECT toString(exchange) AS exchange, toString(symbol) AS symbol, trade_id, price, qty, toString(side) AS side, "
        "toUnixTimestamp64Micro(ts) AS ts, toUnixTimestamp64Micro(ts_recv) AS ts_recv FROM trades"
    ).to_pylist()
    return [SimpleNamespace(**r) for r in rows]


def trade_table(rows: list[dict]) -> pa.Table:
    """Trades in the writer's schema: exchange, symbol, native_symbol, trade_id, price, qty, side, ts, ts_recv."""
    cols = {f.name: [r[f.name] for r in rows] for f in TRADE_SCHEMA}
    cols["price"] = [Decimal(p) for p in cols["price"]]
    cols["qty"] = [Decimal(q) for q in cols["qty"]]
    return pa.table(cols, schema=TRADE_SCHEMA)


def dec(text: str) -> Decimal:
    return Decimal(text)
