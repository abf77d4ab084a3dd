"""The hot store seam. ``ChdbStore`` (embedded ClickHouse) is the default implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    stored: pa.Table | None = None  # the rows inserted (new trades only), for live subscribers


class HotStore(Protocol):
    def migrate(self) -> int:
        """Create or upgrade the schema; idempotent. Returns the schema version."""
        ...

    def insert_trades(self, trades: pa.Table) -> InsertResult:
        """Store trades not stored yet (dedup on exchange, symbol, trade_id). Single writer."""
        ...

    def insert_raw(self, frames: pa.Table) -> None: ...

    def insert_dead_letters(self, dead: pa.Table) -> None: ...

    def insert_gaps(self, gaps: pa.Table) -> None:
        """Gap rows (GAP_SCHEMA); a later row for the same gap replaces the earlier one."""
        ...

    def last_trades(self) -> list[tuple[str, str, int, int]]:
        """(exchange, symbol, highest stored trade_id, its exchange time µs) per stored pair."""
        ...

    def query_arrow(self, sql: str) -> pa.Table:
        """Trusted internal query (no read-only guard)."""
        ...

    def query_text(self, sql: str, fmt: str) -> str: ...

    def close(self) -> None: ...
