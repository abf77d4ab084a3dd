"""POST /v1/sql (read-only, row limit, timeout), API keys, rate limits and CORS."""

from __future__ import annotations

import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from k2.api.app import create_app
from k2.api.server import build_context
from k2.hot.chdb_store import ChdbStore
from tests.api.conftest import make_settings

KEY1 = "k2-test-key-researcher-0001"
KEY2 = "k2-test-key-dashboard-00002"


@pytest.fixture(scope="module")
def store(data_dir):
    s = ChdbStore(data_dir)
    yield s
    s.close()


def _client(data_dir, store, **api):
    ctx = build_context(make_settings(data_dir, **api), store, mode="serve", with_metrics=False)
    return TestClient(create_app(ctx))


@pytest.fixture(scope="module")
def client(data_dir, store):
    with _client(data_dir, store, sql_timeout_s=1, sql_max_rows=1000) as c:
        yield c


# -- SQL -----------------------------------------------------------------------------------------------
def test_sql_json_is_exact(client, store):
    r = client.post("/v1/sql", json={"sql": "SELECT exchange, count() AS n, sum(price * qty) AS q FROM trades "
                                             "GROUP BY exchange ORDER BY exchange"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["columns"]] == ["exchange", "n", "q"]
    want = store.query_arrow("SELECT toString(exchange) AS e, count() AS n, sum(price * qty) AS q FROM trades "
                             "GROUP BY e ORDER BY e").to_pylist()
    assert [(r_[0], int(r_[1]), Decimal(r_[2])) for r_ in body["rows"]] == [(w["e"], w["n"], w["q"]) for w in want]
    assert body["truncated"] is False and body["rows_returned"] == 3


def test_sql_row_limit(client):
    r = client.post("/v1/sql", json={"sql": "SELECT number FROM system.numbers LIMIT 5000"})
    body = r.json()
    assert body["rows_returned"] == 1000 and body["truncated"] is True  # api.sql_max_rows
    r = client.post("/v1/sql", json={"sql": "SELECT number FROM system.numbers LIMIT 50", "max_rows": 7})
    assert r.json()["rows"] == [[str(i)] for i in range(7)] and r.json()["truncated"] is True
    r = client.post("/v1/sql", json={"sql": "SELECT number FROM numbers(10)", "max_rows": 100, "format": "csv"})
    assert r.text.splitlines() == ['"number"', *[str(i) for i in range(10)]]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_sql_arrow_and_parquet(client, fmt):
    r = client.post("/v1/sql", json={"sql": "SELECT price FROM trades ORDER BY exchange, symbol, trade_id LIMIT 5",
                                     "format": fmt})
    assert r.status_code == 200
    t = pa.ipc.open_stream(r.content).read_all() if fmt == "arrow" else pq.read_table(io.BytesIO(r.content))
    assert t.num_rows == 5 and pa.types.is_decimal(t.schema.field("price").type)


@pytest.mark.parametrize(
    "sql,fragment",
    [
        ("INSERT INTO trades_store SELECT * FROM trades_store", "only SELECT"),
        ("ALTER TABLE trades_store DELETE WHERE 1", "only SELECT"),
        ("DROP TABLE trades_store", "only SELECT"),
        ("CREATE TABLE x (a UInt8) ENGINE = Memory", "only SELECT"),
        ("TRUNCATE TABLE trades_store", "only SELECT"),
        ("OPTIMIZE TABLE trades_store FINAL", "only SELECT"),
        ("SYSTEM STOP MERGES", "only SELECT"),
        ("SET readonly = 0", "only SELECT"),
        ("SELECT 1; DROP TABLE trades_store", "only one statement"),
        ("SELECT 1; SELECT 2", "only one statement"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file()"),
        ("SELECT * FROM url('http://127.0.0.1:1/x', 'CSV')", "url()"),
        ("SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')", "s3()"),
        ("SELECT * FROM remote('127.0.0.1', system.one)", "remote()"),
        ("SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')", "mysql()"),
        ("SELECT * FROM executable('id', 'TSV', 'x String')", "executable()"),
        ("SELECT * FROM postgresql('127.0.0.1:5432', 'd', 't', 'u', 'p')", "postgresql()"),
        ("SELECT count() FROM trades SETTINGS readonly = 0", "SETTINGS"),
        ("SELECT 1 INTO OUTFILE '/tmp/k2-pwned'", "INTO OUTFILE"),
        ("SELECT 1 FORMAT TabSeparated", "FORMAT"),
    ],
)
def test_sql_refuses_anything_but_a_plain_read(client, store, sql, fragment):
    before = store.query_arrow("SELECT count() AS n FROM trades_store").to_pylist()[0]["n"]
    r = client.post("/v1/sql", json={"sql": sql})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("refused:") and fragment in r.json()["error"]
    assert store.query_arrow("SELECT count() AS n FROM trades_store").to_pylist()[0]["n"] == before


def test_sql_syntax_error_and_timeout(client):
    r = client.post("/v1/sql", json={"sql": "SELEC 1"})
    assert r.status_code == 400 and "syntax error" in r.json()["error"]
    r = client.post("/v1/sql", json={"sql": "SELECT count() FROM system.numbers WHERE sipHash64(number) = 1"})
    assert r.status_code == 408 and "ran out of time" in r.json()["error"]
    r = client.post("/v1/sql", json={"sql": ""})
    assert r.status_code == 400
    r = client.post("/v1/sql", json={"query": "SELECT 1"})
    assert r.status_code == 400 and "sql" in r.json()["error"]


# -- keys -----------------------------------------------------------------------------------------------
def test_api_keys(data_dir, store):
    with _client(data_dir, store, api_keys=(KEY1, KEY2)) as c:
        assert c.get("/health").status_code == 200  # liveness never needs a key
        r = c.get("/v1/symbols")
        assert r.status_code == 401 and "API key is required" in r.json()["error"]
        assert c.get("/v1/symbols", headers={"X-API-Key": "k2-not-a-valid-key-000000"}).status_code == 401
        assert c.get("/v1/symbols", headers={"X-API-Key": KEY1}).status_code == 200
        assert c.get("/v1/symbols", headers={"Authorization": f"Bearer {KEY2}"}).status_code == 200
        assert c.get(f"/v1/symbols?api_key={KEY1}").status_code == 200
        for path in ("/ready", "/v1/status", "/metrics", "/docs", "/openapi.json", "/", "/v1/ohlcv/1m"):
            assert c.get(path).status_code == 401, path
        assert c.post("/v1/sql", json={"sql": "SELECT 1"}).status_code == 401
        with pytest.raises(WebSocketDisconnect) as exc:
            with c.websocket_connect("/v1/stream") as ws:
                ws.receive_text()
        assert exc.value.code == 1008
        with c.websocket_connect(f"/v1/stream?api_key={KEY1}&symbols=binance:BTC-USDT") as ws:
            assert ws.receive_json()["type"] == "subscribed"


def test_dashboard_page_sets_a_key_cookie(data_dir, store):
    with _client(data_dir, store, api_keys=(KEY1,)) as c:
        r = c.get(f"/?api_key={KEY1}")
        assert r.status_code == 200
        assert "k2_api_key" in r.headers.get("set-cookie", "") and "HttpOnly" in r.headers["set-cookie"]
        # the browser now sends the cookie with the page's own calls
        assert c.get("/v1/symbols").status_code == 200
        c.cookies.clear()
        assert c.get("/v1/symbols").status_code == 401


def test_rate_limits_are_per_key(data_dir, store):
    with _client(data_dir, store, api_keys=(KEY1, KEY2), rate_limit_per_s=0.5, rate_limit_burst=3) as c:
        h1, h2 = {"X-API-Key": KEY1}, {"X-API-Key": KEY2}
        assert [c.get("/v1/exchanges", headers=h1).status_code for _ in range(3)] == [200, 200, 200]
        r = c.get("/v1/exchanges", headers=h1)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["error"]
        assert c.get("/v1/exchanges", headers=h2).status_code == 200  # the other key has its own budget
        assert c.get("/health").status_code == 200


def test_cors(data_dir, store):
    with _client(data_dir, store, cors_origins=("https://notebooks.example.com",)) as c:
        r = c.options("/v1/symbols", headers={"Origin": "https://notebooks.example.com",
                                             "Access-Control-Request-Method": "GET"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://notebooks.example.com"
        r = c.get("/v1/symbols", headers={"Origin": "https://notebooks.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://notebooks.example.com"
        r = c.get("/v1/symbols", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers
    with _client(data_dir, store) as c:  # no CORS configured: no CORS headers
        r = c.get("/v1/symbols", headers={"Origin": "https://notebooks.example.com"})
        assert "access-control-allow-origin" not in r.headers


def test_bad_api_settings_fail_at_start_up(tmp_path, monkeypatch):
    from k2.errors import ConfigError
    from k2.settings import load_settings

    monkeypatch.setenv("K2_API__API_KEYS", '["short"]')
    with pytest.raises(ConfigError, match="api.api_keys"):
        load_settings(data_dir=str(tmp_path))
    monkeypatch.delenv("K2_API__API_KEYS")
    monkeypatch.setenv("K2_API__PORT", "70000")
    with pytest.raises(ConfigError, match="api.port"):
        load_settings(data_dir=str(tmp_path))
