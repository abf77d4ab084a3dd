"""Run an :class:`ExchangeSimulator` on its own event loop in a daemon thread (for tests that run K2 in a
subprocess or in synchronous code)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from k2.sim.config import SimConfig
from k2.sim.market import SimTrade
from k2.sim.simulator import ExchangeSimulator

T = TypeVar("T")


class SimulatorProxy:
    """The simulator's synchronous API, callable from any thread: each call runs on the simulator's loop."""

    def __init__(self, simulator: ExchangeSimulator, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._sim = simulator
        self._loop = loop
        self._timeout = timeout

    @property
    def config(self) -> SimConfig:
        return self._sim.config

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self._timeout)

    def ws_url(self, exchange: str, variant: str | None = None) -> str:
        return self._call(self._sim.ws_url, exchange, variant)

    def rest_url(self, exchange: str) -> str:
        return self._call(self._sim.rest_url, exchange)

    def settings_env(self, coinbase_advanced: bool = False) -> dict[str, str]:
        return self._call(self._sim.settings_env, coinbase_advanced)

    def pause(self, exchange: str | None = None) -> None:
        self._call(self._sim.pause, exchange)

    def resume(self, exchange: str | None = None) -> None:
        self._call(self._sim.resume, exchange)

    def emitted(self, exchange: str) -> list[SimTrade]:
        return self._call(self._sim.emitted, exchange)

    def unfillable(self, exchange: str) -> list[tuple[str, int, int]]:
        return self._call(self._sim.unfillable, exchange)

    def last_id(self, exchange: str, symbol: str) -> int:
        return self._call(self._sim.last_id, exchange, symbol)

    def stats(self, exchange: str) -> dict[str, Any]:
        return self._call(self._sim.stats, exchange)

    def state(self, exchange: str) -> dict[str, Any]:
        return self._call(self._sim.state, exchange)

    def drop_connections(self, exchange: str) -> None:
        self._call(self._sim.drop_connections, exchange)

    def stall(self, exchange: str, seconds: float) -> None:
        self._call(self._sim.stall, exchange, seconds)

    def skip_ids(self, exchange: str, symbol: str, count: int, rest: bool = True) -> None:
        self._call(self._sim.skip_ids, exchange, symbol, count, rest)

    def repeat_frames(self, exchange: str, count: int) -> None:
        self._call(self._sim.repeat_frames, exchange, count)

    def send_malformed(self, exchange: str, count: int) -> None:
        self._call(self._sim.send_malformed, exchange, count)

    def announce_shutdown(self, exchange: str, grace_s: float = 0.5) -> None:
        self._call(self._sim.announce_shutdown, exchange, grace_s)

    def refuse_connections(self, exchange: str, count: int) -> None:
        self._call(self._sim.refuse_connections, exchange, count)

    def rest_errors(self, exchange: str, count: int, status: int = 500) -> None:
        self._call(self._sim.rest_errors, exchange, count, status)

    def rest_rate_limit(self, exchange: str, count: int) -> None:
        self._call(self._sim.rest_rate_limit, exchange, count)


class SimulatorThread:
    """Context manager: an :class:`ExchangeSimulator` serving from a daemon thread.

    ``with SimulatorThread(SimConfig(rate=200)) as sim: env = sim.settings_env()`` starts it (servers bound
    when ``__enter__`` returns) and stops it on exit (connections closed with 1001, thread joined).
    """

    def __init__(self, config: SimConfig | None = None, timeout: float = 15.0) -> None:
        self.config = config or SimConfig()
        self.timeout = timeout
        self._sim: ExchangeSimulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SimulatorProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name="k2-sim", daemon=True)
        self._thread.start()
        try:
            self._sim = asyncio.run_coroutine_threadsafe(self._make_and_start(), loop).result(self.timeout)
        except BaseException:
            self._shutdown()
            raise
        return SimulatorProxy(self._sim, loop, self.timeout)

    async def _make_and_start(self) -> ExchangeSimulator:
        sim = ExchangeSimulator(self.config)
        await sim.start()
        return sim

    def __exit__(self, *exc: object) -> None:
        self._shutdown()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        loop, thread, sim = self._loop, self._thread, self._sim
        if loop is None or thread is None:
            return
        try:
            if sim is not None and thread.is_alive():
                asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(self.timeout)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
            self._loop = self._thread = self._sim = None
