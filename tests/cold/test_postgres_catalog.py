"""The cold tier on a PostgreSQL catalog (``cold.catalog_uri``): a real server, started on 127.0.0.1 for the test.

Skipped, with the reason, where the PostgreSQL server binaries are not installed (Debian: ``postgresql``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from k2.cold.catalog import open_catalog
from k2.cold.offload import Offloader
from k2.hot.chdb_store import ChdbStore
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from tests.cold.test_offload import check_cold_equals_hot

SAMPLE = Path(__file__).parents[2] / "samples" / "sample.jsonl.gz"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    pytest.importorskip("psycopg2")
    # outside pytest's private (0700) temp root: the server may run as another user
    base = Path(tempfile.mkdtemp(prefix="k2-pg-"))
    data = base / "pg"
    data.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        os.chmod(base, 0o755)
        shutil.chown(data, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "k2", "--auth=trust", "-E", "UTF8"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-t", "30", "-l", str(data / "log"),
                    "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"], check=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        import psycopg2

        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="k2", dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"postgresql+psycopg2://k2@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def test_offload_with_a_postgresql_catalog(tmp_path, postgres, parsers):
    settings = load_settings(None, data_dir=str(tmp_path / "data"), cold={"catalog_uri": postgres})
    with ChdbStore(settings.data_dir) as store:
        replay_files([SAMPLE], store, parsers)
        catalog = open_catalog(settings)
        assert type(catalog).__name__ == "SqlCatalog" and catalog.engine.dialect.name == "postgresql"
        res = Offloader(store, catalog, settings, clock=lambda: 1_800_000_000_000_000).run_cycle()
        assert res.trades == 20_000
        check_cold_equals_hot(store, catalog, closed_until=1_800_000_000_000_000)
        # the catalog state lives in PostgreSQL: a fresh catalog object sees the same watermark and rows
        again = Offloader(store, open_catalog(settings), settings, clock=lambda: 1_800_000_000_000_000).run_cycle()
        assert again.trades == 0
