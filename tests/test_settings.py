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
