"""A small client for notebooks: the same questions against a local data directory or a remote K2 API.

    import k2
    with k2.connect("http://127.0.0.1:8000") as k:          # or k2.connect("./k2-data")
        candles = k.ohlcv("binance", "BTC-USDT", "4h", start="2026-07-01", end="2026-07-08")   # pyarrow.Table
        df = k.trades("BTC-USD", start="2026-07-01T00:00:00Z", end="2026-07-01T00:05:00Z", frame="pandas")

Answers are Arrow tables with exact decimal columns (``decimal128``/``decimal256``) and ``timestamp[us, UTC]``
times; ``frame="pandas"`` converts them, decimals becoming exact ``decimal.Decimal`` objects (never floats).
Remote answers travel as Arrow IPC streams, so both paths return the same types and values. Times are
``datetime`` objects, ISO 8601 strings or integer microseconds since the epoch (UTC).

A local data directory is opened in this process; chdb allows one process per store, so while `k2 up` runs on
it, connect to its API instead.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Literal

import pyarrow as pa

from k2.errors import BadRequest, K2Error

Frame = Literal["arrow", "pandas"]
TimeLike = datetime | str | int | None


def _us(value: TimeLike) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
        return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    return str(value)


def _out(table: pa.Table, frame: Frame):
    if frame == "pandas":
        return table.to_pandas()
    if frame != "arrow":
        raise ValueError("frame must be 'arrow' or 'pandas'")
    return table


class ApiError(K2Error):
    """The remote API refused or failed a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class _Client:
    """``with k2.connect(...) as k:`` closes the client at the end."""

    def close(self) -> None:  # pragma: no cover - every client defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalClient(_Client):
    """Reads a data directory in this process (embedded chdb store, both tiers)."""

    def __init__(self, data_dir: str | os.PathLike[str], config: str | None = None) -> None:
        from k2.hot.chdb_store import ChdbStore
        from k2.query.service import QueryService
        from k2.settings import load_settings

        self.settings = load_settings(config, data_dir=str(data_dir))
        self.store = ChdbStore(self.settings.data_dir)
        self.service = QueryService(self.store, self.settings.instrument_table(),
                                    max_json_rows=self.settings.api.max_json_rows, max_bulk_rows=2**62)

    def ohlcv(self, exchange: str, symbol: str, timeframe: str = "1m", start: TimeLike = None,
              end: TimeLike = None, frame: Frame = "arrow"):
        from k2.query.service import parse_timeframe, time_param

        s = self.service
        ex = s.exchange(exchange, required=True)
        table = s.ohlcv_arrow(parse_timeframe(timeframe), ex, s.symbol(ex, symbol),
                              time_param(_us(start), "start"), time_param(_us(end), "end"))
        return _out(table, frame)

    def trades(self, symbol: str, exchange: str | None = None, start: TimeLike = None, end: TimeLike = None,
               limit: int | None = None, frame: Frame = "arrow"):
        from k2.query.service import time_param

        s = self.service
        ex = s.exchange(exchange, required=False)
        table = s.trades_arrow(ex, s.symbol(ex, symbol), time_param(_us(start), "start"),
                               time_param(_us(end), "end"), limit)
        return _out(table, frame)

    def sql(self, query: str, frame: Frame = "arrow"):
        from k2.query.readonly import ReadOnlySQL

        return _out(ReadOnlySQL(self.store, timeout_s=self.settings.query.timeout_s).arrow(query), frame)

    def symbols(self) -> list[dict]:
        return self.service.symbols()

    def close(self) -> None:
        self.store.close()


class RemoteClient(_Client):
    """Talks to a K2 API over HTTP (answers as Arrow IPC)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _arrow(self, method: str, path: str, **kw) -> pa.Table:
        with self.http.stream(method, path, **kw) as resp:
            if resp.status_code != 200:
                resp.read()
                raise ApiError(resp.status_code, _message(resp))
            sink = pa.BufferOutputStream()
            for part in resp.iter_bytes():
                sink.write(part)
        return pa.ipc.open_stream(sink.getvalue()).read_all()

    def ohlcv(self, exchange: str, symbol: str, timeframe: str = "1m", start: TimeLike = None,
              end: TimeLike = None, frame: Frame = "arrow"):
        params = _params(exchange=exchange, symbol=symbol, start=_us(start), end=_us(end), format="arrow")
        return _out(self._arrow("GET", f"/v1/ohlcv/{timeframe}", params=params), frame)

    def trades(self, symbol: str, exchange: str | None = None, start: TimeLike = None, end: TimeLike = None,
               limit: int | None = None, frame: Frame = "arrow"):
        params = _params(exchange=exchange, symbol=symbol, start=_us(start), end=_us(end), limit=limit, format="arrow")
        return _out(self._arrow("GET", "/v1/trades", params=params), frame)

    def sql(self, query: str, frame: Frame = "arrow"):
        return _out(self._arrow("POST", "/v1/sql", json={"sql": query, "format": "arrow"}), frame)

    def symbols(self) -> list[dict]:
        return self._json("/v1/symbols")["symbols"]

    def status(self) -> dict:
        return self._json("/v1/status")

    def _json(self, path: str) -> Any:
        resp = self.http.get(path)
        if resp.status_code != 200:
            raise ApiError(resp.status_code, _message(resp))
        return resp.json()

    def close(self) -> None:
        self.http.close()


def _params(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


def _message(resp) -> str:
    try:
        return resp.json().get("error") or resp.text
    except Exception:
        return resp.text[:300]


def connect(target: str | os.PathLike[str], *, api_key: str | None = None, config: str | None = None):
    """A client for ``target``: an ``http(s)://`` K2 API URL, or a local data directory."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return RemoteClient(text, api_key=api_key)
    if api_key is not None:
        raise BadRequest("api_key is for a remote API; a local data directory needs none")
    return LocalClient(text, config=config)


__all__ = ["ApiError", "LocalClient", "RemoteClient", "connect"]
