"""The cold tier in an S3 warehouse (``cold.warehouse = "s3://..."``, endpoint, credentials as secrets), against
a local S3-compatible server (moto's standalone server on 127.0.0.1), catalog in SQLite.

moto's server refuses the multipart uploads of Arrow's S3 client (INTERNAL_FAILURE on
CompleteMultipartUpload), so this runs with ``cold.file_io = "fsspec"`` (s3fs); against AWS S3 or MinIO the
default Arrow FileIO is the usual choice. The views spanning both tiers read the warehouse through
ClickHouse's own S3 client (``IcebergS3`` engine tables), checked here too.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k2.cold.catalog import open_catalog
from k2.cold.offload import Offloader
from k2.cold.tiers import install_cold_tables
from k2.hot.chdb_store import ChdbStore
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from tests.cold.test_offload import check_cold_equals_hot

SAMPLE = Path(__file__).parents[2] / "samples" / "sample.jsonl.gz"
KEY, SECRET = "k2-test-key", "k2-test-secret-never-logged"


@pytest.fixture
def s3():
    pytest.importorskip("moto.server", reason="moto[server] (the local S3 server for this test) is not installed")
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="k2-cold")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint, client
    finally:
        proc.terminate()
        proc.wait(10)


def test_offload_into_an_s3_warehouse(tmp_path, s3, parsers, caplog):
    caplog.set_level(logging.DEBUG)
    endpoint, client = s3
    settings = load_settings(None, data_dir=str(tmp_path / "data"), cold={
        "warehouse": "s3://k2-cold/warehouse", "s3_endpoint": endpoint, "s3_region": "us-east-1",
        "s3_access_key_id": KEY, "s3_secret_access_key": SECRET, "file_io": "fsspec",
    })
    assert SECRET not in repr(settings) and SECRET not in str(settings.cold)  # SecretStr
    with ChdbStore(settings.data_dir) as store:
        replay_files([SAMPLE], store, parsers)
        catalog = open_catalog(settings)
        assert catalog.load_table("k2.trades").location().startswith("s3://k2-cold/warehouse/")
        res = Offloader(store, catalog, settings, clock=lambda: 1_800_000_000_000_000).run_cycle()
        assert res.trades == 20_000
        check_cold_equals_hot(store, catalog, closed_until=1_800_000_000_000_000)
        install_cold_tables(store, catalog, settings)
        n = store.query_arrow("SELECT count() FROM cold_trades").column(0)[0].as_py()
        assert n == 20_000  # ClickHouse reads the same snapshot from S3
        ddl = store.query_arrow("SELECT create_table_query FROM system.tables WHERE name = 'cold_trades'").column(0)[0].as_py()
        assert SECRET not in ddl  # ClickHouse hides engine credentials
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="k2-cold")["Contents"]]
    assert any(k.endswith(".parquet") and "/trades/data/" in k for k in keys)
    assert SECRET not in caplog.text
