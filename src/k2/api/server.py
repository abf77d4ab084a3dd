"""Serving the API: inside `k2 up` (same event loop as the feeds) or alone (`k2 serve`).

uvicorn runs as a task of the caller's loop on a socket bound here (so ``port = 0`` works and the bound port is
known), with its own signal handling switched off: the entry point owns SIGINT/SIGTERM and stops everything in
order (API last, after the platform has stored what it received, and before the store closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger("k2.api")


def build_context(settings, store, *, mode: str, platform=None, with_metrics: bool = True):
    """The object graph the API serves from (no globals: a registry of its own, a cache of its own)."""
    from k2.api.app import ApiContext
    from k2.query.service import QueryService

    service = QueryService(store, settings.instrument_table(), max_json_rows=settings.api.max_json_rows,
                           max_bulk_rows=settings.api.max_bulk_rows)
    ctx = ApiContext(settings=settings, store=store, service=service, mode=mode, platform=platform)
    ctx.cold_stats = ColdStats(settings)
    if with_metrics:
        from prometheus_client import CollectorRegistry

        from k2.observability.metrics import Metrics

        ctx.metrics = Metrics(CollectorRegistry(), platform=platform, store=store, data_dir=Path(settings.data_dir))
    return ctx


class ColdStats:
    """Rows and offload watermark of the cold tier, read from the Iceberg catalog at most every ``ttl_s``."""

    def __init__(self, settings, ttl_s: float = 15.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._value: dict | None = None
        self._stamp = 0.0
        self._catalog = None
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._stamp > self.ttl_s:
                self._value = self._read()
                self._stamp = now
            return dict(self._value)

    def _read(self) -> dict:
        c = self.settings.cold
        empty = {"trades": 0, "offload_watermark": None, "snapshot_ms": None}
        if c.catalog == "sql" and not c.catalog_uri:
            if not (Path(self.settings.data_dir) / "cold" / "catalog.db").exists():
                return empty  # nothing offloaded yet; do not create a catalog just to look at it
        try:
            if self._catalog is None:
                from k2.cold.catalog import open_catalog

                self._catalog = open_catalog(self.settings)
            from k2.cold.offload import seq_watermark

            table = self._catalog.load_table("k2.trades")
            snap = table.current_snapshot()
            if snap is None:
                return empty
            total = int((snap.summary or {}).get("total-records", 0)) if snap.summary else 0
            wm = seq_watermark(table)
            return {"trades": total, "offload_watermark": wm if wm >= 0 else None, "snapshot_ms": snap.timestamp_ms}
        except Exception as exc:  # the status page reports it instead of failing
            return {**empty, "error": f"{type(exc).__name__}: {exc}"[:300]}


class _Server:
    """uvicorn.Server without its signal capture (the entry point handles signals)."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # noqa: D401 - uvicorn hook
                yield

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            from k2.errors import ConfigError

            raise ConfigError("api.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.host = host
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, ws_max_size=1 << 20,
                                timeout_graceful_shutdown=3)
        self.server = Quiet(config)
        self.task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="k2-api")
        for _ in range(500):  # bounded: uvicorn starts in milliseconds
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()
        self.sock.close()


async def start_api(ctx, host: str, port: int) -> _Server:
    from k2.api.app import create_app

    server = _Server(create_app(ctx), host, port)
    await server.start()
    log.info("k2 api: %s (dashboard %s/ , docs %s/docs)", server.url, server.url, server.url)
    return server


async def serve(settings, stop: asyncio.Event, host: str | None = None, port: int | None = None,
                on_ready=None) -> None:
    """`k2 serve`: the API over a data directory, without feeds, until ``stop``."""
    from k2.hot.chdb_store import ChdbStore

    store = await asyncio.to_thread(ChdbStore, settings.data_dir)
    try:
        ctx = build_context(settings, store, mode="serve")
        server = await start_api(ctx, host or settings.api.host, settings.api.port if port is None else port)
        print(f"k2 serve: {server.url} (dashboard {server.url}/, API docs {server.url}/docs)", flush=True)
        if on_ready is not None:
            on_ready(server)
        try:
            await stop.wait()
        finally:
            await server.stop()
    finally:
        await asyncio.to_thread(store.close)
