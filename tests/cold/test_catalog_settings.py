"""Catalog settings -> PyIceberg catalog properties (the part of the REST/SQL/S3 configuration K2 owns)."""

from __future__ import annotations

import pytest

from k2.cold.catalog import catalog_properties, open_catalog
from k2.errors import ConfigError
from k2.settings import load_settings


def test_defaults_are_sqlite_and_a_local_warehouse_under_the_data_dir(tmp_path):
    props = catalog_properties(load_settings(None, data_dir=str(tmp_path)))
    assert props == {"uri": f"sqlite:///{tmp_path}/cold/catalog.db", "warehouse": f"file://{tmp_path}/cold/warehouse"}
    catalog = open_catalog(load_settings(None, data_dir=str(tmp_path)))
    assert sorted(t[1] for t in catalog.list_tables("k2")) == [
        "ohlcv_15m", "ohlcv_1d", "ohlcv_1h", "ohlcv_1m", "ohlcv_30m", "ohlcv_5m", "raw_frames", "trades"]
    t = catalog.load_table("k2.trades")
    assert [f.name for f in t.spec().fields] == ["ts_day", "exchange"]
    assert t.properties["write.parquet.compression-codec"] == "zstd"
    assert [f.name for f in catalog.load_table("k2.ohlcv_1m").spec().fields] == ["bucket_month"]


def test_rest_catalog_properties_keep_the_token_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("K2_COLD__CATALOG", "rest")
    monkeypatch.setenv("K2_COLD__CATALOG_URI", "https://catalog.example/api/catalog")
    monkeypatch.setenv("K2_COLD__CATALOG_TOKEN", "t0ken-secret")
    monkeypatch.setenv("K2_COLD__WAREHOUSE", "s3://lake/k2")
    monkeypatch.setenv("K2_COLD__S3_ACCESS_KEY_ID", "AKIA-x")
    monkeypatch.setenv("K2_COLD__S3_SECRET_ACCESS_KEY", "s3-secret")
    s = load_settings(None, data_dir=str(tmp_path))
    assert "t0ken-secret" not in repr(s) and "s3-secret" not in repr(s)
    assert catalog_properties(s) == {
        "uri": "https://catalog.example/api/catalog", "token": "t0ken-secret", "warehouse": "s3://lake/k2",
        "s3.access-key-id": "AKIA-x", "s3.secret-access-key": "s3-secret",
    }
    monkeypatch.delenv("K2_COLD__CATALOG_URI")
    with pytest.raises(ConfigError, match="cold.catalog_uri"):
        catalog_properties(load_settings(None, data_dir=str(tmp_path)))


def test_bad_cold_settings_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("K2_COLD__CATALOG", "hive")
    with pytest.raises(ConfigError, match="cold.catalog"):
        load_settings(None, data_dir=str(tmp_path))
