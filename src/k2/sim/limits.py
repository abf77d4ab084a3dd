"""Rate limits: a token bucket, a rolling weight window and a sliding message counter (monotonic seconds)."""

from __future__ import annotations

import math
from collections import deque


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; starts full."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if available."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class RollingWeight:
    """Weight used over the last ``window_s`` seconds (Binance ``X-MBX-USED-WEIGHT-1M``)."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._items: deque[tuple[float, int]] = deque()
        self._total = 0

    def used(self, now: float) -> int:
        while self._items and self._items[0][0] <= now - self.window_s:
            self._total -= self._items.popleft()[1]
        return self._total

    def fits(self, now: float, weight: int) -> bool:
        return self.used(now) + weight <= self.limit

    def add(self, now: float, weight: int) -> None:
        self.used(now)
        self._items.append((now, weight))
        self._total += weight

    def retry_after(self, now: float, weight: int) -> int:
        """Whole seconds until ``weight`` more fits (at least 1)."""
        excess = self.used(now) + weight - self.limit
        for at, w in self._items:
            excess -= w
            if excess <= 0:
                return max(1, math.ceil(at + self.window_s - now))
        return max(1, math.ceil(self.window_s))


class SlidingCounter:
    """Events in the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def hit(self, now: float) -> int:
        """Record one event; return how many fall in the window ending now."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times)
