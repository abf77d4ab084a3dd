"""Synthetic but realistic exchange streams, in each exchange's own wire format.

Used for the sample capture, the benchmarks and tests: contiguous trade ids per pair, random-walk prices on
each pair's tick size, log-normal sizes on its lot size, bursts of trades sharing one timestamp, and the
control frames a real session sees (subscription acks, heartbeats). Deterministic for a given seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import numpy as np

from k2.capture.writer import CaptureWriter
from k2.model.instrument import Instrument, InstrumentTable

#: base asset -> (start price, price decimals, qty decimals, relative weight of trade activity)
PROFILES: dict[str, tuple[float, int, int, float]] = {
    "BTC": (117_234.56, 2, 8, 10.0),
    "ETH": (3_456.78, 2, 6, 7.0),
    "BNB": (712.34, 2, 5, 2.0),
    "SOL": (187.65, 2, 5, 5.0),
    "XRP": (2.8765, 4, 1, 4.0),
    "ADA": (0.8123, 4, 1, 2.0),
    "DOT": (4.321, 3, 2, 1.0),
    "LINK": (18.76, 3, 3, 1.5),
    "DOGE": (0.23456, 5, 0, 3.0),
    "LTC": (112.34, 2, 5, 1.0),
    "AVAX": (28.91, 2, 4, 1.0),
    "ATOM": (5.432, 3, 3, 0.8),
}
_DEFAULT_PROFILE = (10.0, 3, 4, 0.5)


@dataclass
class SynthTrade:
    inst: Instrument
    trade_id: int
    price: str  # canonical decimal text
    qty: str
    sell: bool  # aggressor sold
    ts_us: int
    ts_recv_us: int


def _fmt(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    s = str(units).rjust(decimals + 1, "0")
    return f"{s[:-decimals]}.{s[-decimals:]}"


def _strip(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _pad8(text: str) -> str:
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(8, '0')}"


def _rfc3339(us: int) -> str:
    secs, frac = divmod(us, 1_000_000)
    days, rem = divmod(secs, 86_400)
    y, m, d = _civil(days)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    return f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{frac:06d}Z"


def _civil(z: int) -> tuple[int, int, int]:
    # days since 1970-01-01 -> (y, m, d), Howard Hinnant's algorithm
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d)


def synth_trades(
    instruments: list[Instrument],
    n: int,
    *,
    seed: int = 7,
    start_us: int = 1_784_073_600_000_000,
    rate: float = 5_000.0,
    id_offset: int = 0,
) -> Iterator[SynthTrade]:
    """``n`` trades across ``instruments`` in receive order, about ``rate`` trades/s overall."""
    rng = np.random.default_rng(seed)
    weights = np.array([PROFILES.get(i.base, _DEFAULT_PROFILE)[3] for i in instruments])
    which = rng.choice(len(instruments), size=n, p=weights / weights.sum())
    gaps = rng.exponential(1e6 / rate, size=n).astype(np.int64)
    same_match = rng.random(n) < 0.25  # a quarter of trades share the previous trade's match time
    gaps[same_match] = 0
    ts = start_us + np.cumsum(gaps)
    latency = rng.integers(800, 40_000, size=n)
    sells = rng.random(n) < 0.5
    steps = rng.integers(-3, 4, size=n)
    sizes = rng.lognormal(0.0, 1.3, size=n)
    state = []
    for k, inst in enumerate(instruments):
        price, pdec, qdec, _ = PROFILES.get(inst.base, _DEFAULT_PROFILE)
        state.append([int(round(price * 10**pdec)), pdec, qdec, 1_000_000 * (k + 3) + 17 + id_offset, inst])
    for j in range(n):
        st = state[which[j]]
        st[0] = max(1, st[0] + int(steps[j]))
        st[3] += 1
        qdec = st[2]
        base_units = max(1, int(sizes[j] * 10 ** max(qdec - 2, 0) * (10 if qdec <= 1 else 1)))
        yield SynthTrade(st[4], st[3], _strip(_fmt(st[0], st[1])), _strip(_fmt(base_units, qdec)), bool(sells[j]), int(ts[j]), int(ts[j] + latency[j]))


_enc = msgspec.json.Encoder()


def binance_frame(t: SynthTrade, micro: bool = False, combined: bool = True) -> str:
    T = t.ts_us if micro else t.ts_us // 1000
    body = (
        f'{{"e":"trade","E":{T + 1},"s":"{t.inst.native_symbol}","t":{t.trade_id},"p":"{_pad8(t.price)}",'
        f'"q":"{_pad8(t.qty)}","T":{T},"m":{"true" if t.sell else "false"},"M":true}}'
    )
    if combined:
        return f'{{"stream":"{t.inst.native_symbol.lower()}@trade","data":{body}}}'
    return body


def kraken_frame(trades: list[SynthTrade], kind: str = "update") -> str:
    items = ",".join(
        f'{{"symbol":"{t.inst.native_symbol}","side":"{"sell" if t.sell else "buy"}","price":{t.price},'
        f'"qty":{t.qty},"ord_type":"{"market" if t.trade_id % 3 == 0 else "limit"}","trade_id":{t.trade_id},'
        f'"timestamp":"{_rfc3339(t.ts_us)}"}}'
        for t in trades
    )
    return f'{{"channel":"trade","type":"{kind}","data":[{items}]}}'


def coinbase_match(t: SynthTrade, seq: int) -> str:
    maker = "buy" if t.sell else "sell"  # the Exchange feed sends the maker side
    return (
        f'{{"type":"match","trade_id":{t.trade_id},"maker_order_id":"{t.trade_id:032x}",'
        f'"taker_order_id":"{t.trade_id + 1:032x}","side":"{maker}","size":"{t.qty}","price":"{t.price}",'
        f'"product_id":"{t.inst.native_symbol}","sequence":{seq},"time":"{_rfc3339(t.ts_us).replace("000Z", "Z")}"}}'
    )


def coinbase_market_trades(trades: list[SynthTrade], seq: int, ts_us: int, kind: str = "update") -> str:
    items = ",".join(
        f'{{"trade_id":"{t.trade_id}","product_id":"{t.inst.native_symbol}","price":"{t.price}","size":"{t.qty}",'
        f'"side":"{"BUY" if t.sell else "SELL"}","time":"{_rfc3339(t.ts_us)}"}}'
        for t in trades
    )
    return (
        f'{{"channel":"market_trades","client_id":"","timestamp":"{_rfc3339(ts_us)}","sequence_num":{seq},'
        f'"events":[{{"type":"{kind}","trades":[{items}]}}]}}'
    )


def write_synthetic_capture(
    path: str | os.PathLike[str],
    n_trades: int,
    *,
    instruments: InstrumentTable | None = None,
    seed: int = 7,
    start_us: int = 1_784_073_600_000_000,
    rate: float = 5_000.0,
    control_every: int = 2_000,
    id_offset: int = 0,
) -> int:
    """Write a capture of ``n_trades`` trades across the instrument table. Returns the number of lines.

    Binance: combined-stream ``@trade`` frames, one trade each. Kraken: v2 ``trade`` updates holding every
    consecutive trade of a pair that shares a match time. Coinbase: Exchange-feed ``match`` frames.
    Heartbeats and acks are sprinkled in as a real session would see them.
    """
    table = instruments or InstrumentTable.default()
    insts = list(table)
    lines = 0
    seq = 1
    with CaptureWriter(path) as out:
        records: list[tuple[str, int, str, str | None]] = []
        for ex, frame in (
            ("binance", '{"result":null,"id":1}'),
            ("kraken", '{"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":18409444206880552937,"system":"online","version":"2.0.10"}]}'),
            ("coinbase", '{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]}]}'),
        ):
            records.append((ex, start_us, frame, f"{ex}-1"))
        pending: list[SynthTrade] = []

        def flush_kraken() -> None:
            if pending:
                records.append(("kraken", pending[-1].ts_recv_us, kraken_frame(pending), "kraken-1"))
                pending.clear()

        for k, t in enumerate(synth_trades(insts, n_trades, seed=seed, start_us=start_us, rate=rate, id_offset=id_offset)):
            ex = t.inst.exchange
            if ex != "kraken" or (pending and (pending[-1].inst is not t.inst or pending[-1].ts_us != t.ts_us)):
                flush_kraken()
            if ex == "binance":
                records.append((ex, t.ts_recv_us, binance_frame(t), "binance-1"))
            elif ex == "kraken":
                pending.append(t)
            else:
                seq += 2
                records.append((ex, t.ts_recv_us, coinbase_match(t, seq), "coinbase-1"))
            if k % control_every == control_every - 1:
                records.append(("kraken", t.ts_recv_us, '{"channel":"heartbeat"}', "kraken-1"))
            if len(records) >= 20_000:
                out.write_many(records)
                lines += len(records)
                records.clear()
        flush_kraken()
        out.write_many(records)
        lines += len(records)
    return lines
