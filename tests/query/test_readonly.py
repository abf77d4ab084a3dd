"""The read-only SQL surface refuses anything that writes, changes settings, or reaches files/network."""

from __future__ import annotations

import pytest

from k2.errors import QueryFailed, QueryRefused
from k2.query.readonly import ReadOnlySQL, single_statement

REFUSED = [
    "INSERT INTO trades_store SELECT * FROM trades_store",
    "DELETE FROM trades_store WHERE 1",
    "ALTER TABLE trades_store DELETE WHERE 1",
    "ALTER TABLE trades_store UPDATE qty = 0 WHERE 1",
    "DROP TABLE trades_store",
    "TRUNCATE TABLE trades_store",
    "CREATE TABLE x (a UInt8) ENGINE = Memory",
    "RENAME TABLE trades_store TO t2",
    "OPTIMIZE TABLE trades_store FINAL",
    "SYSTEM STOP MERGES",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "SELECT 1; DROP TABLE trades_store",
    "SELECT 1; SELECT 2",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 100000",
    "SELECT file('/etc/passwd')",
    "select FiLe('/etc/passwd')",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV')",
    "SELECT * FROM s3('http://127.0.0.1:9/b/k')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM icebergLocal('/tmp')",
    "SELECT * FROM numbers(2) INTO OUTFILE '/tmp/k2-x'",
    "SELECT 1 FORMAT CSV",
    "WITH x AS (SELECT file('/etc/passwd') AS f) SELECT * FROM x",
    "SELECT * FROM trades WHERE symbol IN (SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 's String'))",
    "EXPLAIN SELECT 1",
    "SELECT 'unterminated",
    "SELECT 1 /* open comment",
    "",
    "   ;",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused(store, sql):
    with pytest.raises(QueryRefused):
        ReadOnlySQL(store).text(sql, "CSV")


def test_nothing_was_written(store):
    for sql in REFUSED:
        with pytest.raises(QueryRefused):
            ReadOnlySQL(store).text(sql, "CSV")
    tables = store.query_arrow("SELECT name FROM system.tables WHERE database = currentDatabase()").column(0).to_pylist()
    assert "x" not in tables and "t2" not in tables and "trades_store" in tables


ALLOWED = [
    ("SELECT count() FROM trades", "0\n"),
    ("SELECT count() FROM trades;", "0\n"),
    ("select count() from ohlcv_1m -- trailing comment; with a semicolon", "0\n"),
    ("SELECT ';' AS semi", '";"\n'),
    ("SELECT 'DROP TABLE x; --' AS s", '"DROP TABLE x; --"\n'),
    ("WITH t AS (SELECT 1 AS a) SELECT a FROM t", "1\n"),
    ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1", "1\n2\n"),
    ("SELECT sum(number) FROM numbers(10)", "45\n"),
    ("SELECT count() FROM system.tables WHERE name = 'trades'", "1\n"),
]


@pytest.mark.parametrize("sql,expected", ALLOWED)
def test_allowed(store, sql, expected):
    assert ReadOnlySQL(store).text(sql, "CSV") == expected


def test_engine_errors_are_query_failed_and_session_stays_usable(store):
    ro = ReadOnlySQL(store)
    with pytest.raises(QueryFailed):
        ro.text("SELECT nosuchcolumn FROM trades", "CSV")
    assert ro.text("SELECT 41 + 1", "CSV") == "42\n"


def test_timeout_is_enforced(store):
    ro = ReadOnlySQL(store, timeout_s=1)
    with pytest.raises(QueryFailed, match="(?i)timeout|time limit|TIMEOUT"):
        ro.text("SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) % 7 = 3", "CSV")
    assert ro.text("SELECT 1", "CSV") == "1\n"


@pytest.mark.parametrize(
    "sql,expected",
    [("SELECT 1;", "SELECT 1"), ("SELECT ';'", "SELECT ';'"), ("SELECT 1; -- done", "SELECT 1"), ("SELECT 'a''b'", "SELECT 'a''b'")],
)
def test_single_statement(sql, expected):
    assert single_statement(sql) == expected
