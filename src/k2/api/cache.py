"""Answers kept until a write touches their pair, and one computation per question at a time.

Fifty dashboards asking for the same day of candles should cost one store query, not fifty, and a cached
answer must never be stale. Every stored batch bumps a generation counter per (exchange, symbol) it touched
(the writer thread calls :meth:`Generations.bump` after the insert is committed); an answer is kept with the
generations of its pairs as read *before* its query ran, so it stays valid exactly until a later write touches
one of them. ``bump_all`` (offload, retention) invalidates everything.

A miss for a question already being computed waits for that computation instead of running its own
(single flight).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

Pair = tuple[str, str]


class Generations:
    def __init__(self) -> None:
        self._pairs: dict[Pair, int] = {}
        self._all = 0
        self._lock = threading.Lock()

    def token(self, pairs: Iterable[Pair]) -> tuple:
        with self._lock:
            return (self._all, *(self._pairs.get(p, 0) for p in pairs))

    def bump(self, pairs: Iterable[Pair]) -> None:
        with self._lock:
            for p in pairs:
                self._pairs[p] = self._pairs.get(p, 0) + 1

    def bump_all(self) -> None:
        with self._lock:
            self._all += 1


class AnswerCache:
    """LRU of answers (used from the event loop only)."""

    def __init__(self, generations: Generations, max_entries: int = 2048) -> None:
        self.generations = generations
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple, Any]] = OrderedDict()
        self._inflight: dict[tuple, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0
        self.shared = 0

    async def get(self, key: Hashable, pairs: list[Pair], compute: Callable[[], Awaitable[Any]]) -> Any:
        if self.max_entries == 0:
            return await compute()
        token = self.generations.token(pairs)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == token:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        flight = (key, token)
        fut = self._inflight.get(flight)
        if fut is not None:
            self.shared += 1
            return await asyncio.shield(fut)
        self.misses += 1
        fut = asyncio.get_running_loop().create_future()
        self._inflight[flight] = fut
        try:
            value = await compute()
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            self._inflight.pop(flight, None)
        fut.set_result(value)
        self._entries[key] = (token, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
