"""Synthetic but realistic exchange trade frames for the parse benchmark (exchanges.md §1.3, 1.4, 2.4, 3.3, 3.4).

Each venue gets a deterministic "tape" of trades (per-symbol random-walk prices on the venue's tick grid,
log-normal sizes on its lot grid, contiguous trade ids per symbol, microsecond times around 2026-07-15 12:00 UTC,
taker orders that sweep several fills at one timestamp). The tape is then rendered into the wire formats:

* Binance ``@trade`` (raw and combined-stream envelope) and, for cryptofeed, combined-stream ``aggTrade``
  carrying the same fills one per frame;
* Kraken WS v2 ``trade`` updates (one frame per taker order, 1-3 trades, mostly 1; prices/qty as JSON numbers)
  and, for cryptofeed, the same trades per frame as Kraken WS v1 ``[chan, [[p, v, t, side, type, misc]], "trade", "XBT/USD"]``;
* Coinbase Advanced ``market_trades`` updates (1-10 trades per frame, batched) and Coinbase Exchange ``match``.

All prices and sizes are held as integers in units of 1e-8 and formatted exactly; nothing goes through float.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

UNIT = 10**8  # prices and sizes are integers in units of 1e-8
START_US = 1_784_116_800_000_000  # 2026-07-15T12:00:00Z


def _u(text: str) -> int:
    """Decimal text -> integer units of 1e-8."""
    whole, _, frac = text.partition(".")
    return int(whole) * UNIT + int((frac + "0" * 8)[:8])


# base asset: (price USD, weight, binance tick, binance step, kraken tick, kraken lot, coinbase tick, coinbase step)
ASSETS: dict[str, tuple] = {
    "BTC": ("117250", 30, "0.01", "0.00001", "0.1", "0.00000001", "0.01", "0.00000001"),
    "ETH": ("3615.4", 20, "0.01", "0.0001", "0.01", "0.00000001", "0.01", "0.00000001"),
    "BNB": ("705.3", 5, "0.01", "0.001", None, None, None, None),
    "SOL": ("181.62", 10, "0.01", "0.001", "0.01", "0.00000001", "0.01", "0.00000001"),
    "XRP": ("3.0712", 8, "0.0001", "0.1", "0.00001", "0.00000001", "0.0001", "0.000001"),
    "ADA": ("0.7534", 4, "0.0001", "0.1", "0.000001", "0.00000001", "0.0001", "0.00000001"),
    "DOT": ("4.213", 2, "0.001", "0.01", "0.0001", "0.00000001", "0.001", "0.00000001"),
    "LINK": ("17.42", 3, "0.01", "0.01", "0.00001", "0.00000001", "0.001", "0.00000001"),
    "DOGE": ("0.20417", 8, "0.00001", "1", "0.0000001", "0.00000001", "0.00001", "0.1"),
    "LTC": ("95.61", 3, "0.01", "0.001", "0.01", "0.00000001", "0.01", "0.00000001"),
    "AVAX": ("22.84", 3, "0.01", "0.01", "0.001", "0.00000001", "0.01", "0.00000001"),
    "ATOM": ("4.812", 2, "0.001", "0.01", "0.0001", "0.00000001", "0.001", "0.00000001"),
}

# first trade id per symbol, roughly where the real counters stand (Binance BTCUSDT ~5e9 etc.)
_START_IDS = {
    "binance": {"BTC": 5_401_238_771, "ETH": 2_790_114_032, "BNB": 1_120_553_219, "SOL": 1_482_009_311,
                "XRP": 940_772_118, "ADA": 612_337_905, "DOT": 398_221_654, "LINK": 701_554_320,
                "DOGE": 1_045_998_102, "LTC": 512_664_087, "AVAX": 389_117_442, "ATOM": 301_775_910},
    "kraken": {"BTC": 84_112_907, "ETH": 61_337_512, "SOL": 22_104_388, "XRP": 31_771_204, "ADA": 12_440_915,
               "DOT": 9_812_334, "LINK": 8_231_077, "DOGE": 19_004_562, "LTC": 14_552_093, "AVAX": 5_331_870,
               "ATOM": 4_110_254},
    "coinbase": {"BTC": 861_224_519, "ETH": 655_120_874, "SOL": 201_994_036, "XRP": 98_331_672, "ADA": 77_120_441,
                 "DOT": 41_552_980, "LINK": 66_310_442, "DOGE": 118_442_007, "LTC": 101_229_315, "AVAX": 52_118_733,
                 "ATOM": 38_220_641},
}

# Kraken v1 channel ids and v1 pair names (XBT, XDG) for the cryptofeed comparison
KRAKEN_V1_NAME = {b: f"{ {'BTC': 'XBT', 'DOGE': 'XDG'}.get(b, b) }/USD" for b in ASSETS if b != "BNB"}
KRAKEN_V1_CHANNEL = {b: 119930880 + 17 * i for i, b in enumerate(KRAKEN_V1_NAME)}
# Kraken REST pair key for AssetPairs (only used to feed cryptofeed's symbol parser)
KRAKEN_ALTNAME = {b: KRAKEN_V1_NAME[b].replace("/", "") for b in KRAKEN_V1_NAME}

VENUES = ("binance", "kraken", "coinbase")


def native(venue: str, base: str) -> str:
    if venue == "binance":
        return f"{base}USDT"
    if venue == "kraken":
        return f"{base}/USD"
    return f"{base}-USD"


def venue_bases(venue: str) -> list[str]:
    return [b for b, a in ASSETS.items() if venue == "binance" or a[4] is not None]


@dataclass(slots=True)
class Fill:
    base: str
    trade_id: int
    price: int  # units of 1e-8
    qty: int  # units of 1e-8
    taker_sell: bool
    ts_us: int
    order: int  # taker-order (burst) number: fills of one taker order share it


@dataclass
class Tape:
    venue: str
    fills: list[Fill]
    bursts: list[list[Fill]]


def make_tape(venue: str, n_trades: int, seed: int = 7) -> Tape:
    """``n_trades`` fills on ``venue``: contiguous ids per symbol, bursts of fills per taker order."""
    rng = random.Random(f"{venue}-{seed}")
    bases = venue_bases(venue)
    weights = [ASSETS[b][1] for b in bases]
    col = {"binance": (2, 3), "kraken": (4, 5), "coinbase": (6, 7)}[venue]
    tick = {b: _u(ASSETS[b][col[0]]) for b in bases}
    step = {b: _u(ASSETS[b][col[1]]) for b in bases}
    price = {b: _u(ASSETS[b][0]) // tick[b] * tick[b] for b in bases}
    next_id = dict(_START_IDS[venue])
    # mean gap between taker orders: Binance busiest, Kraken quietest
    gap_us = {"binance": 2_500, "kraken": 40_000, "coinbase": 9_000}[venue]
    if venue == "kraken":
        sizes, size_w = [1, 2, 3], [75, 15, 10]
    elif venue == "binance":
        sizes, size_w = [1, 2, 3, 4, 5, 6], [60, 18, 9, 6, 4, 3]
    else:
        sizes, size_w = [1, 2, 3, 4], [70, 17, 8, 5]
    ts = START_US
    fills: list[Fill] = []
    bursts: list[list[Fill]] = []
    order = 0
    while len(fills) < n_trades:
        ts += int(rng.expovariate(1.0 / gap_us)) + 1
        b = rng.choices(bases, weights)[0]
        k = min(rng.choices(sizes, size_w)[0], n_trades - len(fills))
        sell = rng.random() < 0.5
        # random walk of a few ticks between taker orders, never below 100 ticks
        price[b] = max(100 * tick[b], price[b] + tick[b] * rng.randint(-3, 3))
        p = price[b]
        notional = rng.lognormvariate(5.5, 1.6)  # USD, median ~250
        burst = []
        shares = [rng.random() + 0.2 for _ in range(k)]
        total = sum(shares)
        for share in shares:
            q = int(notional * share / total * UNIT * UNIT / p) // step[b] * step[b]
            q = max(q, step[b])
            f = Fill(b, next_id[b], p, q, sell, ts, order)
            next_id[b] += 1
            burst.append(f)
            fills.append(f)
            if rng.random() < 0.35:  # the sweep walks the book one tick
                p = p - tick[b] if sell else p + tick[b]
                p = max(p, tick[b])
        price[b] = p
        bursts.append(burst)
        order += 1
    return Tape(venue, fills, bursts)


# ---------------------------------------------------------------- formatting helpers


def pad8(units: int) -> str:
    return f"{units // UNIT}.{units % UNIT:08d}"


def trim(units: int) -> str:
    whole, frac = divmod(units, UNIT)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:08d}".rstrip("0")


def pad(units: int, dp: int) -> str:
    whole, frac = divmod(units, UNIT)
    return f"{whole}.{f'{frac:08d}'[:dp]}" if dp <= 8 else f"{whole}.{frac:08d}{'0' * (dp - 8)}"


_sec_cache: dict[int, str] = {}


def rfc3339(us: int, digits: int = 6, trim_zeros: bool = True) -> str:
    """RFC3339 UTC text with ``digits`` fractional digits (µs or ns input by ``digits``), trailing zeros trimmed."""
    scale = 10**digits
    sec, frac = divmod(us, scale)
    head = _sec_cache.get(sec)
    if head is None:
        head = _sec_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    f = f"{frac:0{digits}d}"
    if trim_zeros:
        f = f.rstrip("0")
    return f"{head}.{f}Z" if f else f"{head}Z"


def _recv(rng: random.Random, ts_us: int) -> int:
    """Local receive time: trade time plus 2-40 ms of network and matching latency."""
    return ts_us + rng.randint(2_000, 40_000)


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------- Binance


def binance_trade_frames(tape: Tape, mode: str = "mixed") -> tuple[list[str], list[int]]:
    """``@trade`` frames, one per fill. mode: raw | combined | mixed (alternating, half each)."""
    rng = random.Random("binance-recv")
    frames, recv = [], []
    for i, f in enumerate(tape.fills):
        T = f.ts_us // 1000
        E = T + (1 if rng.random() < 0.3 else 0)
        sym = native("binance", f.base)
        body = (
            f'{{"e":"trade","E":{E},"s":"{sym}","t":{f.trade_id},"p":"{pad8(f.price)}","q":"{pad8(f.qty)}",'
            f'"T":{T},"m":{"true" if f.taker_sell else "false"},"M":true}}'
        )
        combined = mode == "combined" or (mode == "mixed" and i % 2 == 1)
        frames.append(f'{{"stream":"{sym.lower()}@trade","data":{body}}}' if combined else body)
        recv.append(_recv(rng, f.ts_us))
    return frames, recv


def binance_aggtrade_frames(tape: Tape) -> tuple[list[str], list[float]]:
    """Combined-stream ``aggTrade`` frames (what cryptofeed subscribes to), one per fill: same trades."""
    rng = random.Random("binance-recv")
    agg0 = {b: i * 10**8 + 3_000_000_000 for i, b in enumerate(ASSETS)}
    frames, recv = [], []
    for f in tape.fills:
        T = f.ts_us // 1000
        E = T + (1 if rng.random() < 0.3 else 0)
        sym = native("binance", f.base)
        a = agg0[f.base] + f.trade_id  # its own id space
        frames.append(
            f'{{"stream":"{sym.lower()}@aggTrade","data":{{"e":"aggTrade","E":{E},"s":"{sym}","a":{a},'
            f'"p":"{pad8(f.price)}","q":"{pad8(f.qty)}","f":{f.trade_id},"l":{f.trade_id},"T":{T},'
            f'"m":{"true" if f.taker_sell else "false"},"M":true}}}}'
        )
        recv.append(_recv(rng, f.ts_us) / 1e6)
    return frames, recv


# ---------------------------------------------------------------- Kraken


def kraken_v2_frames(tape: Tape) -> tuple[list[str], list[int]]:
    """WS v2 ``trade`` updates: one frame per taker order (1-3 trades), prices/qty as JSON numbers."""
    rng = random.Random("kraken-recv")
    frames, recv = [], []
    for burst in tape.bursts:
        items = []
        for f in burst:
            ord_type = "market" if f.order % 4 else "limit"
            items.append(
                f'{{"symbol":"{native("kraken", f.base)}","side":"{"sell" if f.taker_sell else "buy"}",'
                f'"price":{trim(f.price)},"qty":{trim(f.qty)},"ord_type":"{ord_type}","trade_id":{f.trade_id},'
                f'"timestamp":"{rfc3339(f.ts_us, 6, trim_zeros=False)}"}}'
            )
        frames.append(f'{{"channel":"trade","type":"update","data":[{",".join(items)}]}}')
        recv.append(_recv(rng, burst[-1].ts_us))
    return frames, recv


def kraken_v1_frames(tape: Tape) -> tuple[list[str], list[float]]:
    """WS v1 trade frames with the same trades per frame (cryptofeed 2.4.1 speaks v1)."""
    rng = random.Random("kraken-recv")
    frames, recv = [], []
    for burst in tape.bursts:
        b = burst[0].base
        rows = []
        for f in burst:
            dp = max(5, len(ASSETS[b][4].split(".")[1]))
            t = f"{f.ts_us // 1_000_000}.{f.ts_us % 1_000_000:06d}"
            rows.append(
                f'["{pad(f.price, dp)}","{pad8(f.qty)}","{t}","{"s" if f.taker_sell else "b"}",'
                f'"{"m" if f.order % 4 else "l"}",""]'
            )
        frames.append(f'[{KRAKEN_V1_CHANNEL[b]},[{",".join(rows)}],"trade","{KRAKEN_V1_NAME[b]}"]')
        recv.append(_recv(rng, burst[-1].ts_us) / 1e6)
    return frames, recv


# ---------------------------------------------------------------- Coinbase


def coinbase_advanced_frames(tape: Tape, seed: int = 11) -> tuple[list[str], list[int], int]:
    """Advanced Trade ``market_trades`` updates, 1-10 trades per frame (batched over 250 ms).

    Returns (frames, ts_recv µs, trade count). Coinbase ``side`` is the maker side: taker sell -> ``BUY``.
    """
    rng = random.Random(f"coinbase-adv-{seed}")
    sizes, size_w = list(range(1, 11)), [30, 18, 12, 9, 8, 6, 5, 5, 4, 3]
    fills = tape.fills
    frames, recv = [], []
    i, seq, env_us = 0, 18_204, 0
    while i < len(fills):
        k = min(rng.choices(sizes, size_w)[0], len(fills) - i)
        chunk = fills[i : i + k]
        i += k
        items = [
            f'{{"product_id":"{native("coinbase", f.base)}","trade_id":"{f.trade_id}","price":"{trim(f.price)}",'
            f'"size":"{trim(f.qty)}","time":"{rfc3339(f.ts_us)}","side":"{"BUY" if f.taker_sell else "SELL"}"}}'
            for f in chunk
        ]
        # sent when the batch closes (up to 250 ms after its first trade); received 2-40 ms later
        env_us = max(env_us + 1, chunk[-1].ts_us + rng.randint(1_000, 250_000 - min(249_000, chunk[-1].ts_us - chunk[0].ts_us)))
        env_ns = env_us * 1000 + rng.randint(0, 999)
        r = _recv(rng, env_us)
        frames.append(
            f'{{"channel":"market_trades","client_id":"","timestamp":"{rfc3339(env_ns, 9)}","sequence_num":{seq},'
            f'"events":[{{"type":"update","trades":[{",".join(items)}]}}]}}'
        )
        seq += 1
        recv.append(r)
    return frames, recv, len(fills)


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def coinbase_match_frames(tape: Tape) -> tuple[list[str], list[int]]:
    """Coinbase Exchange ``match`` frames, one per fill (same trades as the Advanced stream)."""
    rng = random.Random("coinbase-match")
    seq = {b: 98_000_000_000 + i * 1_000_000_000 for i, b in enumerate(ASSETS)}
    makers = [_uuid(rng) for _ in range(4096)]
    takers: dict[int, str] = {}
    frames, recv = [], []
    for f in tape.fills:
        seq[f.base] += rng.choice((2, 2, 2, 3, 4))
        taker = takers.get(f.order)
        if taker is None:
            takers.clear()
            taker = takers[f.order] = _uuid(rng)
        frames.append(
            f'{{"type":"match","trade_id":{f.trade_id},"maker_order_id":"{makers[rng.getrandbits(12)]}",'
            f'"taker_order_id":"{taker}","side":"{"buy" if f.taker_sell else "sell"}","size":"{trim(f.qty)}",'
            f'"price":"{trim(f.price)}","product_id":"{native("coinbase", f.base)}","sequence":{seq[f.base]},'
            f'"time":"{rfc3339(f.ts_us)}"}}'
        )
        recv.append(_recv(rng, f.ts_us))
    return frames, recv


# ---------------------------------------------------------------- symbol metadata for cryptofeed (offline)


def binance_exchange_info() -> dict:
    """Minimal ``/api/v3/exchangeInfo`` body for cryptofeed's ``Binance._parse_symbol_data``."""
    return {
        "symbols": [
            {"symbol": native("binance", b), "baseAsset": b, "quoteAsset": "USDT", "status": "TRADING",
             "filters": [{"filterType": "PRICE_FILTER", "tickSize": pad8(_u(ASSETS[b][2]))}]}
            for b in venue_bases("binance")
        ]
    }


def kraken_asset_pairs() -> dict:
    """Minimal ``/0/public/AssetPairs`` body for cryptofeed's ``Kraken._parse_symbol_data``."""
    return {"error": [], "result": {KRAKEN_ALTNAME[b]: {"altname": KRAKEN_ALTNAME[b], "wsname": KRAKEN_V1_NAME[b]}
                                    for b in venue_bases("kraken")}}


def coinbase_products() -> dict:
    """Minimal ``/api/v3/brokerage/products`` body for cryptofeed's ``Coinbase._parse_symbol_data``."""
    return {"products": [{"product_id": native("coinbase", b), "base_currency_id": b, "quote_currency_id": "USD",
                          "quote_increment": ASSETS[b][6]} for b in venue_bases("coinbase")]}


if __name__ == "__main__":  # show a few frames of each kind
    for name, fn in (
        ("binance @trade", lambda: binance_trade_frames(make_tape("binance", 6))[0]),
        ("binance aggTrade", lambda: binance_aggtrade_frames(make_tape("binance", 3))[0]),
        ("kraken v2", lambda: kraken_v2_frames(make_tape("kraken", 8))[0]),
        ("kraken v1", lambda: kraken_v1_frames(make_tape("kraken", 8))[0]),
        ("coinbase advanced", lambda: coinbase_advanced_frames(make_tape("coinbase", 12))[0]),
        ("coinbase match", lambda: coinbase_match_frames(make_tape("coinbase", 3))[0]),
    ):
        print(f"--- {name}")
        for fr in fn()[:4]:
            print(fr)
