"""Answers kept until a write touches their pair, and one computation per question at a time.

Fifty dashboards asking for the same day of candles should cost one store query, not fifty, and a cached
answer must never be stale. Every stored batch bumps a generation counter per (exchange, symbol) it touched
(the writer thread calls :meth:`Generations.bump` after the insert is committed); an answer is kept with the
generations of its pairs as read *before* its query ran, so it stays valid exactly until a later write touches
one of them. ``bump_all`` (offload, retention) invalidates everything.

A miss for a question already being computed waits for that computation instead of running its own
(single flight), or, when an earlier answer exists, gets that one at once (see :class:`AnswerCache`).

Generations also remember, per pair, the earliest trade time each recent bump touched. An answer that can be
brought up to date from a time on (candles: every bucket from the first touched one) is refreshed instead of
recomputed: a day of 1m candles costs a query of the last bucket or two, not the whole day.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

Pair = tuple[str, str]


class Generations:
    HISTORY = 1024  # bumps remembered per pair (a refresh needs every bump since its answer's generation)

    def __init__(self) -> None:
        self._pairs: dict[Pair, int] = {}
        self._history: dict[Pair, deque] = {}  # pair -> (generation, earliest trade time µs it touched)
        self._all = 0
        self._lock = threading.Lock()

    def token(self, pairs: Iterable[Pair]) -> tuple:
        with self._lock:
            return (self._all, *(self._pairs.get(p, 0) for p in pairs))

    def bump(self, pairs: Iterable[Pair] | dict[Pair, int]) -> None:
        """A write touched ``pairs`` (a dict gives the earliest trade time, µs, it touched per pair)."""
        with self._lock:
            for p in pairs:
                gen = self._pairs[p] = self._pairs.get(p, 0) + 1
                first = pairs[p] if isinstance(pairs, dict) else None
                hist = self._history.get(p)
                if hist is None:
                    hist = self._history[p] = deque(maxlen=self.HISTORY)
                hist.append((gen, first))

    def bump_all(self) -> None:
        with self._lock:
            self._all += 1

    def touched_since(self, old: tuple, pairs: list[Pair]) -> int | None:
        """Earliest trade time written to ``pairs`` since token ``old`` was read; None when unknown (then the
        answer must be recomputed)."""
        with self._lock:
            if old[0] != self._all:
                return None
            first: int | None = None
            for p, gen in zip(pairs, old[1:]):
                now = self._pairs.get(p, 0)
                if now == gen:
                    continue
                hist = self._history.get(p)
                if not hist or hist[0][0] > gen + 1:
                    return None  # bumps older than the history: unknown
                for g, t in reversed(hist):
                    if g <= gen:
                        break
                    if t is None:
                        return None
                    first = t if first is None else min(first, t)
            return first


class AnswerCache:
    """LRU of answers (used from the event loop only).

    One computation per question at a time. While an answer is being brought up to date, other requests for it
    get the previous answer at once when ``serve_previous`` is on (the default; stale-while-revalidate): it is a
    complete, exact answer as of the moment that refresh started, so it lacks at most the writes of the last
    few tens of milliseconds, and a client never gets an answer older than one it already had. With it off they
    wait for the refresh (strict read-after-write).
    """

    def __init__(self, generations: Generations, max_entries: int = 2048, serve_previous: bool = True) -> None:
        self.generations = generations
        self.max_entries = max_entries
        self.serve_previous = serve_previous
        self._entries: OrderedDict[Hashable, tuple[tuple, Any]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0
        self.refreshes = 0
        self.shared = 0
        self.previous = 0

    async def get(self, key: Hashable, pairs: list[Pair], compute: Callable[[], Awaitable[Any]],
                  refresh: Callable[[Any, int], Awaitable[Any]] | None = None) -> Any:
        """The answer to ``key``: cached if no write touched ``pairs`` since, else ``refresh(old, since_us)``
        when given and the earliest touched time is known, else ``compute()``."""
        if self.max_entries == 0:
            return await compute()
        token = self.generations.token(pairs)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == token:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        fut = self._inflight.get(key)
        if fut is not None:
            if entry is not None and self.serve_previous:
                self.previous += 1
                return entry[1]
            self.shared += 1
            return await asyncio.shield(fut)
        since = None
        if entry is not None and refresh is not None:
            since = self.generations.touched_since(entry[0], pairs)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            if since is not None:
                self.refreshes += 1
                value = await refresh(entry[1], since)
            else:
                self.misses += 1
                value = await compute()
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(value)
        self._entries[key] = (token, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
