"""Bus protocol and the message it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


class BusClosed(Exception):
    """Publishing to a closed bus."""


@dataclass
class IngestBatch:
    """What one parse step produced: the raw frames, the normalized trades and the dead letters.

    The writer stores all three; delivery is at-least-once and the store is idempotent (trades dedup on
    (exchange, symbol, trade_id); raw frames and dead letters collapse on their keys).
    """

    raw: pa.Table  # RAW_SCHEMA
    trades: pa.Table  # TRADE_SCHEMA
    dead: pa.Table  # DEAD_SCHEMA
    frames: int = 0
    control: int = 0
    ignored: int = 0
    gaps: pa.Table | None = None  # GAP_SCHEMA rows (live feeds), stored after the trades of the same batch


class Bus(Protocol):
    def publish(self, batch: IngestBatch) -> None:
        """Hand a batch to the consumer; blocks when the consumer is behind (back-pressure)."""
        ...

    def consume(self, timeout: float) -> IngestBatch | None:
        """Next batch, or None after ``timeout`` seconds with nothing, or when closed and drained."""
        ...

    def ack(self, batch: IngestBatch) -> None:
        """The batch is durably stored; a broker-backed bus commits its offset here."""
        ...

    def close(self) -> None:
        """No more publishing; the consumer drains what is queued."""
        ...

    @property
    def drained(self) -> bool:
        """Closed and everything published has been consumed."""
        ...
