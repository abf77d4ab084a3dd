"""Trade generation and the ground truth of one simulated exchange.

Per instrument: contiguous trade ids, a random walk of the price on the profile's tick (never <= 0),
log-normal sizes on the lot size (never 0), a random aggressor side, and now and then several trades
sharing one timestamp. Prices and sizes are integers of ticks turned into decimal text; no float ever
touches an emitted value. The sequence of trades is a function of the seed alone: how many trades each
tick emits comes from a separate random stream, so timing changes only the timestamps.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from typing import NamedTuple

import msgspec
import numpy as np

from k2.capture.synth import _DEFAULT_PROFILE, PROFILES, SynthTrade, _fmt, _strip
from k2.model.instrument import EXCHANGES, Instrument
from k2.sim.fmt import now_us

#: Share of trades that reuse the previous trade's match time (when it was generated in the same tick).
SAME_MATCH_SHARE = 0.25


class SimTrade(msgspec.Struct, frozen=True):
    """One generated trade: what a perfect client would store.

    ``price``/``qty`` are canonical decimal text (no trailing zeros); ``side`` is the AGGRESSOR side;
    ``ts_us`` is the exchange trade time in µs (wall clock at generation).
    """

    exchange: str
    symbol: str  # canonical BASE-QUOTE
    native_symbol: str
    trade_id: int
    price: str
    qty: str
    side: str  # buy | sell (aggressor)
    ts_us: int


class Generated(NamedTuple):
    """A trade as generation hands it to the protocol layer."""

    trade: SimTrade
    inst: Instrument
    ws: bool  # False: generated but not sent on WebSocket (skip_ids fault)


def to_synth(trade: SimTrade, inst: Instrument) -> SynthTrade:
    """The ``k2.capture.synth`` view of a trade, for its frame builders."""
    return SynthTrade(inst, trade.trade_id, trade.price, trade.qty, trade.side == "sell", trade.ts_us, trade.ts_us)


def profile(inst: Instrument) -> tuple[float, int, int, float]:
    """(start price, price decimals, qty decimals, activity weight) of an instrument."""
    return PROFILES.get(inst.base, _DEFAULT_PROFILE)


class _Draws:
    """Per-trade random draws, produced in fixed-size blocks so the sequence never depends on timing."""

    BLOCK = 1024

    def __init__(self, rng: np.random.Generator, weights: np.ndarray) -> None:
        self._rng = rng
        self._p = weights / weights.sum()
        self._pos = self.BLOCK
        self._block: tuple[list, ...] = ()

    def _refill(self) -> None:
        rng, n = self._rng, self.BLOCK
        self._block = (
            rng.choice(len(self._p), size=n, p=self._p).tolist(),
            rng.integers(-3, 4, size=n).tolist(),
            rng.lognormal(0.0, 1.3, size=n).tolist(),
            (rng.random(n) < 0.5).tolist(),
            (rng.random(n) < SAME_MATCH_SHARE).tolist(),
        )
        self._pos = 0

    def next(self) -> tuple[int, int, float, bool, bool]:
        """(instrument index, price step in ticks, size factor, aggressor sold, shares the previous match time)."""
        if self._pos >= self.BLOCK:
            self._refill()
        i = self._pos
        self._pos += 1
        which, step, size, sell, same = (col[i] for col in self._block)
        return which, step, size, sell, same


class SymbolBook:
    """State, history and faults of one instrument."""

    def __init__(self, inst: Instrument, start_id: int, keep: int) -> None:
        price, self.pdec, self.qdec, self.weight = profile(inst)
        self.inst = inst
        self.units = max(1, int(round(price * 10**self.pdec)))  # the walk's start, in ticks
        self.first_id = start_id
        self.next_id = start_id
        self.keep = keep
        self.log: list[SimTrade] = []  # trades REST can serve, ascending ids (unfillable ones never enter)
        self.skips: deque[list] = deque()  # [remaining, rest_serves_them]
        self.unfillable: list[list[int]] = []  # [first, last] id ranges
        self.last_ts = 0
        self.last_tick = -1

    @property
    def last_id(self) -> int:
        """Highest generated id (0 when none)."""
        return self.next_id - 1 if self.next_id > self.first_id else 0

    def take_skip(self) -> tuple[bool, bool]:
        """(send on WS, serve on REST) for the next generated trade."""
        if not self.skips:
            return True, True
        head = self.skips[0]
        head[0] -= 1
        if head[0] <= 0:
            self.skips.popleft()
        return False, bool(head[1])

    def record(self, trade: SimTrade, rest: bool) -> None:
        if rest:
            self.log.append(trade)
            if len(self.log) > self.keep + max(64, self.keep // 8):
                del self.log[: len(self.log) - self.keep]
        elif self.unfillable and self.unfillable[-1][1] == trade.trade_id - 1:
            self.unfillable[-1][1] = trade.trade_id
        else:
            self.unfillable.append([trade.trade_id, trade.trade_id])

    # --- history queries (only the last ``keep`` trades are visible) ---

    def _lo(self) -> int:
        return max(0, len(self.log) - self.keep)

    def kept(self) -> list[SimTrade]:
        return self.log[self._lo():]

    def latest(self, n: int) -> list[SimTrade]:
        """The newest ``n`` kept trades, ascending."""
        if n <= 0:
            return []
        return self.log[max(self._lo(), len(self.log) - n):]

    def from_id(self, first: int, n: int) -> list[SimTrade]:
        """Up to ``n`` trades with id >= ``first``, ascending."""
        i = bisect_left(self.log, first, lo=self._lo(), key=_trade_id)
        return self.log[i:i + n]

    def after_time(self, us: int, n: int) -> list[SimTrade]:
        """The oldest ``n`` trades with ts_us > ``us``, ascending."""
        i = bisect_right(self.log, us, lo=self._lo(), key=_ts_us)
        return self.log[i:i + n]

    def id_range(self, above: int | None, below: int | None, n: int, oldest: bool) -> list[SimTrade]:
        """Up to ``n`` trades with ``above`` < id < ``below``: the oldest or the newest of them, ascending."""
        lo = self._lo()
        i = lo if above is None else bisect_right(self.log, above, lo=lo, key=_trade_id)
        j = len(self.log) if below is None else bisect_left(self.log, below, lo=lo, key=_trade_id)
        if j <= i:
            return []
        return self.log[i:min(j, i + n)] if oldest else self.log[max(i, j - n):j]


def _trade_id(t: SimTrade) -> int:
    return t.trade_id


def _ts_us(t: SimTrade) -> int:
    return t.ts_us


class Market:
    """Trade generation, history and ground truth of one exchange."""

    def __init__(self, exchange: str, instruments: list[tuple[int, Instrument]], seed: int, keep: int) -> None:
        if not instruments:
            raise ValueError(f"no instruments for {exchange}")
        self.exchange = exchange
        self.books: dict[str, SymbolBook] = {}
        self._order: list[SymbolBook] = []
        for k, inst in instruments:
            book = SymbolBook(inst, 1_000_000 * (k + 3) + 17, keep)
            self.books[inst.symbol] = book
            self._order.append(book)
        self.by_native = {b.inst.native_symbol: b for b in self._order}
        count_seq, draw_seq = np.random.SeedSequence([seed, EXCHANGES.index(exchange)]).spawn(2)
        self._counts = np.random.default_rng(count_seq)
        self._draws = _Draws(np.random.default_rng(draw_seq), np.array([b.weight for b in self._order], dtype=float))
        self._tick = 0
        self.generated_total = 0
        self.emitted_total = 0

    def book(self, symbol: str) -> SymbolBook:
        """The book of a canonical symbol (``KeyError`` naming the symbol when unknown)."""
        try:
            return self.books[symbol]
        except KeyError:
            raise KeyError(f"{self.exchange} has no instrument {symbol!r}") from None

    def trade_count(self, rate: float, elapsed_s: float) -> int:
        """Poisson number of trades for ``elapsed_s`` seconds at ``rate`` trades/s."""
        lam = rate * elapsed_s
        return int(self._counts.poisson(lam)) if lam > 0 else 0

    def generate(self, n: int) -> list[Generated]:
        """Generate ``n`` trades (one tick), record them, and return them in generation order."""
        self._tick += 1
        return [self._one() for _ in range(n)]

    def _one(self) -> Generated:
        which, step, size, sell, same = self._draws.next()
        book = self._order[which]
        book.units = max(1, book.units + step)
        qdec = book.qdec
        lots = max(1, int(size * 10 ** max(qdec - 2, 0) * (10 if qdec <= 1 else 1)))
        if same and book.last_tick == self._tick:
            ts = book.last_ts
        else:
            ts = max(now_us(), book.last_ts)
        book.last_ts, book.last_tick = ts, self._tick
        tid = book.next_id
        book.next_id += 1
        inst = book.inst
        trade = SimTrade(
            self.exchange, inst.symbol, inst.native_symbol, tid,
            _strip(_fmt(book.units, book.pdec)), _strip(_fmt(lots, qdec)), "sell" if sell else "buy", ts,
        )
        ws, rest = book.take_skip()
        book.record(trade, rest)
        self.generated_total += 1
        self.emitted_total += rest
        return Generated(trade, inst, ws)

    # --- ground truth ---

    def emitted(self) -> list[SimTrade]:
        """Every kept trade a client can obtain, in instrument order then id order."""
        return [t for book in self._order for t in book.kept()]

    def unfillable(self) -> list[tuple[str, int, int]]:
        return [(b.inst.symbol, f, l) for b in self._order for f, l in b.unfillable]

    def last_ids(self) -> dict[str, int]:
        return {b.inst.symbol: b.last_id for b in self._order}
