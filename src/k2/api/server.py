"""Serving the API: inside `k2 up` (next to the feeds) or alone (`k2 serve`).

uvicorn runs on a thread and event loop of its own, on a socket bound here (so ``port = 0`` works and the bound
port is known), with its signal handling switched off: the entry point owns SIGINT/SIGTERM and stops
everything in order (API last, after the platform has stored what it received, and before the store closes).
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

    # reads on connections of their own: never queued behind the writer's inserts (chdb runs one query at a time
    # per connection)
    reader = store.readers(settings.api.query_threads) if hasattr(store, "readers") else store
    service = QueryService(reader, settings.instrument_table(), max_json_rows=settings.api.max_json_rows,
                           max_bulk_rows=settings.api.max_bulk_rows)
    ctx = ApiContext(settings=settings, store=reader, service=service, mode=mode, platform=platform)
    ctx.cold_stats = ColdStats(settings)
    if with_metrics:
        from prometheus_client import CollectorRegistry

        from k2.observability.metrics import Metrics

        ctx.metrics = Metrics(CollectorRegistry(), platform=platform, store=reader, data_dir=Path(settings.data_dir))
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


class ApiServer:
    """uvicorn on a thread and event loop of its own (uvloop + httptools when installed).

    In `k2 up` the main loop runs the feeds and the exchange sessions; a long parse step there must not stall an
    API answer or a stream message, so the API gets its own loop (store calls release the GIL). uvicorn's
    signal capture is off: the entry point owns SIGINT/SIGTERM and stops everything in order.
    """

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
        http = "httptools" if _has("httptools") else "h11"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, ws_max_size=1 << 20,
                                timeout_graceful_shutdown=3, http=http, ws="websockets-sansio")
        self.server = Quiet(config)
        self.thread = threading.Thread(target=self._run, name="k2-api", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported by start()
            self.error = exc
        finally:
            loop.close()

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            self.stop_sync()
            raise RuntimeError(f"the API did not start: {self.error!r}")

    def stop_sync(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
        self.sock.close()

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _new_loop() -> asyncio.AbstractEventLoop:
    if _has("uvloop"):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def freeze_startup_objects() -> None:
    """Move everything start-up built (modules, settings, tables, the app) out of the garbage collector's view.

    A full collection walks every tracked object while holding the GIL; measured under `k2 up` at 5,000 trades/s
    those walks took 40-80 ms and were the longest stalls of the API and the feeds. Objects created later are
    collected as usual; frozen ones are still freed by reference counting.
    """
    import gc

    gc.collect()
    gc.freeze()


async def start_api(ctx, host: str, port: int) -> ApiServer:
    from k2.api.app import create_app

    server = ApiServer(create_app(ctx), host, port)
    await asyncio.to_thread(server.start)
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
        freeze_startup_objects()
        if on_ready is not None:
            on_ready(server)
        try:
            await stop.wait()
        finally:
            await server.stop()
    finally:
        await asyncio.to_thread(store.close)
