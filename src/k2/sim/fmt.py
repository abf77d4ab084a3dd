"""Exact text formatting shared by the simulated exchanges. Integers and decimal text only, never floats."""

from __future__ import annotations

import time
from decimal import Decimal

from k2.capture.synth import _civil, _rfc3339
from k2.model.trade import EXACT, canonical_decimal

__all__ = ["pad", "rfc3339_us", "rfc3339_trimmed", "rfc3339_nano", "go_time", "seconds_literal", "decimal_product", "now_us"]


def now_us() -> int:
    """Wall clock now, µs since the epoch."""
    return time.time_ns() // 1000


def pad(text: str, decimals: int) -> str:
    """Decimal text zero-padded to at least ``decimals`` fractional digits (never truncated)."""
    if decimals <= 0:
        return text
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(decimals, '0')}"


def rfc3339_us(us: int) -> str:
    """RFC3339 UTC with exactly 6 fractional digits (Kraken v2, Coinbase REST)."""
    return _rfc3339(us)


def rfc3339_trimmed(us: int) -> str:
    """RFC3339 UTC, µs at most, trailing zeros trimmed (Coinbase Exchange feed style)."""
    text = _rfc3339(us)
    head, _, frac = text[:-1].partition(".")
    frac = frac.rstrip("0")
    return f"{head}.{frac}Z" if frac else f"{head}Z"


def _date_time(secs: int) -> tuple[str, str]:
    days, rem = divmod(secs, 86_400)
    y, m, d = _civil(days)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    return f"{y:04d}-{m:02d}-{d:02d}", f"{hh:02d}:{mm:02d}:{ss:02d}"


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano: up to 9 fractional digits, trailing zeros trimmed (Coinbase Advanced envelope)."""
    secs, frac = divmod(ns, 1_000_000_000)
    date, clock = _date_time(secs)
    digits = f"{frac:09d}".rstrip("0")
    return f"{date}T{clock}.{digits}Z" if digits else f"{date}T{clock}Z"


def go_time(ns: int, mono_ns: int) -> str:
    """Go's ``time.Time.String()`` with its monotonic suffix: ``2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105``."""
    secs, frac = divmod(ns, 1_000_000_000)
    date, clock = _date_time(secs)
    digits = f"{frac:09d}".rstrip("0")
    stamp = f"{date} {clock}.{digits}" if digits else f"{date} {clock}"
    msecs, mfrac = divmod(mono_ns, 1_000_000_000)
    return f"{stamp} +0000 UTC m=+{msecs}.{mfrac:09d}"


def seconds_literal(us: int) -> str:
    """Seconds since the epoch as a JSON number literal with 6 decimals, written from exact µs (Kraken REST)."""
    return f"{us // 10**6}.{us % 10**6:06d}"


def decimal_product(a: str, b: str) -> str:
    """Exact product of two decimal texts, canonical text (Binance ``quoteQty``)."""
    return canonical_decimal(EXACT.multiply(Decimal(a), Decimal(b)))
