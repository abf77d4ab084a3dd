"""Shared helpers of the simulator tests: a running simulator, bounded receive loops, ground-truth checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import websockets

from k2.model.instrument import InstrumentTable
from k2.model.trade import Trade, trades_from_table
from k2.sim import ExchangeSimulator, SimConfig
from k2.venues.base import ParseResult
from k2.venues.registry import make_parsers

T = TypeVar("T")
PARSERS = make_parsers(InstrumentTable.default())

#: Fast settings for tests: many trades, short intervals.
FAST = dict(rate=200.0, tick_s=0.02, heartbeat_interval_s=0.2, binance_ping_interval_s=0.5, subscribe_deadline_s=3.0)


def cfg(**overrides: Any) -> SimConfig:
    return SimConfig(**{**FAST, **overrides})


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    """Run a test coroutine with a hard time limit."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def simulator(**overrides: Any) -> AsyncIterator[ExchangeSimulator]:
    sim = ExchangeSimulator(cfg(**overrides))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def now_us() -> int:
    return time.time_ns() // 1000


async def recv_for(ws: Any, seconds: float) -> list[str | bytes]:
    """Every frame received within ``seconds`` (stops early when the connection closes)."""
    out: list[str | bytes] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            out.append(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            break
        except websockets.ConnectionClosed:
            break
    return out


async def recv_until(ws: Any, pred: Callable[[str | bytes], bool], timeout: float = 3.0) -> list[str | bytes]:
    """Frames up to and including the first one ``pred`` accepts (``AssertionError`` on timeout)."""
    out: list[str | bytes] = []
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        assert left > 0, f"condition not met within {timeout} s; got {len(out)} frames, last: {out[-3:]!r}"
        try:
            frame = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            continue
        out.append(frame)
        if pred(frame):
            return out


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def until_trades(sim: ExchangeSimulator, exchange: str, symbol: str, n: int, timeout: float = 5.0) -> None:
    """Wait until ``symbol`` has at least ``n`` trades in the simulator's history."""
    await wait_for(lambda: sum(t.symbol == symbol for t in sim.emitted(exchange)) >= n, timeout)


def parse(exchange: str, frames: list[str | bytes]) -> ParseResult:
    return PARSERS[exchange].parse(frames, [now_us()] * len(frames))


def js(frame: str | bytes) -> Any:
    return json.loads(frame)


def check_truth(sim: ExchangeSimulator, exchange: str, frames: list[str | bytes], ms: bool = False) -> list[Trade]:
    """Parse ``frames`` with K2's parser; every trade must equal the simulator's ground truth, value for value."""
    result = parse(exchange, frames)
    assert result.dead == []
    trades = trades_from_table(result.trades)
    truth = {(t.symbol, t.trade_id): t for t in sim.emitted(exchange)}
    for tr in trades:
        t = truth[(tr.symbol, tr.trade_id)]
        assert tr.exchange == exchange and tr.native_symbol == t.native_symbol
        assert tr.price == Decimal(t.price) and tr.qty == Decimal(t.qty)
        assert tr.side == t.side
        assert tr.ts == ((t.ts_us // 1000) * 1000 if ms else t.ts_us)
    return trades


def ids_of(trades: list[Trade], symbol: str) -> list[int]:
    return [t.trade_id for t in trades if t.symbol == symbol]


def contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids))) if ids else True
