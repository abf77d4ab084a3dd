from __future__ import annotations

from pathlib import Path

import pytest

from k2.cli import main
from k2.errors import ConfigError
from k2.settings import load_settings


def test_precedence_cli_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "k2.toml"
    cfg.write_text('data_dir = "/from/file"\n[writer]\nmax_rows = 10\n')
    monkeypatch.delenv("K2_DATA_DIR", raising=False)
    assert load_settings(cfg).data_dir == Path("/from/file")
    monkeypatch.setenv("K2_DATA_DIR", "/from/env")
    assert load_settings(cfg).data_dir == Path("/from/env")
    assert load_settings(cfg, data_dir="/from/cli").data_dir == Path("/from/cli")
    assert load_settings(cfg).writer.max_rows == 10
    monkeypatch.setenv("K2_WRITER__MAX_ROWS", "20")
    assert load_settings(cfg).writer.max_rows == 20


@pytest.mark.parametrize(
    "env,value,name",
    [("K2_WRITER__MAX_ROWS", "lots", "writer.max_rows"), ("K2_WRITER__MAX_ROWS", "0", "writer.max_rows"),
     ("K2_QUERY__TIMEOUT_S", "-1", "query.timeout_s"), ("K2_COINBASE_ADVANCED_SIDE_IS_MAKER", "perhaps", "coinbase_advanced_side_is_maker")],
)
def test_bad_env_setting_is_named(monkeypatch, env, value, name):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value) and env in str(err.value)


def test_unknown_key_and_bad_toml_are_refused(tmp_path):
    cfg = tmp_path / "k2.toml"
    cfg.write_text("[writer]\nmax_rowz = 1\n")
    with pytest.raises(ConfigError, match="writer.max_rowz"):
        load_settings(cfg)
    cfg.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="config"):
        load_settings(cfg)


def test_cli_fails_at_start_with_the_setting_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("K2_WRITER__MAX_ROWS", "many")
    assert main(["sql", "SELECT 1", "--data-dir", str(tmp_path)]) == 2
    assert "writer.max_rows" in capsys.readouterr().err


def test_feed_endpoints_default_live_and_follow_env(monkeypatch):
    for ex in ("BINANCE", "KRAKEN", "COINBASE"):
        for kind in ("WS", "REST"):
            monkeypatch.delenv(f"K2_{ex}_{kind}_URL", raising=False)
    s = load_settings()
    assert s.exchanges == ("binance", "kraken", "coinbase")
    assert s.ws_url("binance") == "wss://data-stream.binance.vision"
    assert s.ws_url("kraken") == "wss://ws.kraken.com/v2"
    assert s.ws_url("coinbase") == "wss://ws-feed.exchange.coinbase.com"
    assert s.rest_url("binance") == "https://api.binance.com"
    assert s.rest_url("kraken") == "https://api.kraken.com"
    assert s.rest_url("coinbase") == "https://api.exchange.coinbase.com"
    monkeypatch.setenv("K2_COINBASE_FEED", "advanced")
    assert load_settings().ws_url("coinbase") == "wss://advanced-trade-ws.coinbase.com"
    for ex in ("BINANCE", "KRAKEN", "COINBASE"):
        monkeypatch.setenv(f"K2_{ex}_WS_URL", f"ws://127.0.0.1:1/{ex.lower()}/")
        monkeypatch.setenv(f"K2_{ex}_REST_URL", f"http://127.0.0.1:2/{ex.lower()}")
    s = load_settings()
    for ex in ("binance", "kraken", "coinbase"):
        assert s.ws_url(ex) == f"ws://127.0.0.1:1/{ex}" and s.rest_url(ex) == f"http://127.0.0.1:2/{ex}"


def test_feed_endpoints_from_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("K2_KRAKEN_WS_URL", raising=False)
    cfg = tmp_path / "k2.toml"
    cfg.write_text('kraken_ws_url = "wss://beta-ws.kraken.com/v2"\nexchanges = ["kraken"]\n[feeds]\nbackoff_max_s = 30\n')
    s = load_settings(cfg)
    assert s.ws_url("kraken") == "wss://beta-ws.kraken.com/v2" and s.exchanges == ("kraken",)
    assert s.feeds.backoff_max_s == 30
