"""Shared helpers for the venue parser tests: recorded capture files and exact trade comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from k2.model import TRADE_SCHEMA, Trade
from k2.model.trade import canonical_decimal

FRAMES_DIR = Path(__file__).resolve().parents[1] / "data" / "frames"


@dataclass(frozen=True)
class Capture:
    """One JSON Lines capture file: {"exchange", "ts_recv" (µs), "frame" (text as received), "conn"?} per line."""

    exchange: str
    frames: list[str]
    ts_recv: list[int]
    conns: list[str | None]


def read_capture(name: str) -> Capture:
    frames, ts_recv, conns, exchanges = [], [], [], set()
    with open(FRAMES_DIR / f"{name}.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            assert set(rec) <= {"exchange", "ts_recv", "frame", "conn"}, f"{name}.jsonl line {n}: unexpected keys"
            assert isinstance(rec["frame"], str) and type(rec["ts_recv"]) is int
            exchanges.add(rec["exchange"])
            frames.append(rec["frame"])
            ts_recv.append(rec["ts_recv"])
            conns.append(rec.get("conn"))
    assert len(exchanges) == 1, f"{name}.jsonl mixes exchanges {exchanges}"
    return Capture(exchanges.pop(), frames, ts_recv, conns)


def assert_trades_equal(actual: list[Trade], expected: list[Trade]) -> None:
    """Every field of every trade, exactly; decimals compared as Decimal and by canonical text."""

    def key(t: Trade):
        return (t.symbol, t.trade_id, t.ts, t.ts_recv)

    actual = sorted(actual, key=key)
    expected = sorted(expected, key=key)
    assert [key(t) for t in actual] == [key(t) for t in expected], "trade set differs"
    for a, e in zip(actual, expected):
        where = f"trade {e.symbol} #{e.trade_id}"
        for name in Trade.__struct_fields__:
            av, ev = getattr(a, name), getattr(e, name)
            assert type(av) is type(ev), f"{where}: {name} has type {type(av).__name__}, expected {type(ev).__name__}"
            assert av == ev, f"{where}: {name} = {av!r}, expected {ev!r}"
        for name in ("price", "qty"):
            av, ev = getattr(a, name), getattr(e, name)
            assert isinstance(av, Decimal)
            assert canonical_decimal(av) == canonical_decimal(ev), f"{where}: {name} text {canonical_decimal(av)}"


def assert_trade_schema(table) -> None:
    assert table.schema.equals(TRADE_SCHEMA), f"trade table schema differs:\n{table.schema}"


@pytest.fixture
def capture():
    """capture(name) -> Capture loaded from tests/data/frames/<name>.jsonl."""
    return read_capture


@pytest.fixture
def check_trades():
    return assert_trades_equal


@pytest.fixture
def check_schema():
    return assert_trade_schema
