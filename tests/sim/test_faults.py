"""Every fault, observed from a real client: drop, stall, skip_ids, repeat, malformed, refuse, REST errors and limits."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.sim.simutil import check_truth, contiguous, ids_of, js, parse, recv_for, recv_until, run, simulator


def test_drop_aborts_without_close_frame():
    async def main():
        async with simulator(exchanges=("kraken", "binance")) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as k, \
                    websockets.connect(sim.ws_url("binance") + "/ws/btcusdt@trade") as b:
                await k.recv()
                await b.recv()
                sim.drop_connections("kraken")
                with pytest.raises(websockets.ConnectionClosedError) as info:
                    for _ in range(1000):
                        await asyncio.wait_for(k.recv(), 2)
                assert info.value.rcvd is None  # no close frame: an abrupt TCP abort
                assert (await asyncio.wait_for(b.recv(), 2)).startswith('{"e":"trade"')  # other exchange untouched
            assert sim.stats("kraken")["connections_dropped"] == 1
            async with websockets.connect(sim.ws_url("kraken")) as k:  # reconnecting works
                assert '"system":"online"' in await k.recv()

    run(main())


def test_stall_sends_nothing_then_resumes_with_a_gap_rest_can_fill():
    async def main():
        async with simulator(exchanges=("coinbase", "binance"), heartbeat_interval_s=0.15,
                             binance_ping_interval_s=0.1, rest_rate_per_s=1000.0) as sim:
            async with websockets.connect(sim.ws_url("coinbase")) as ws, \
                    websockets.connect(sim.ws_url("binance") + "/ws/btcusdt@trade") as bws:
                await ws.send(json.dumps({"type": "subscribe", "channels": [
                    {"name": "matches", "product_ids": ["BTC-USD"]}, {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}))
                before = await recv_until(ws, lambda f: '"type":"heartbeat"' in f)
                before += await recv_until(ws, lambda f: '"type":"match"' in f)
                await recv_for(bws, 0.3)
                sim.stall("coinbase", 0.9)
                sim.stall("binance", 0.9)
                pings = sim.stats("binance")["pings_sent"]
                t0 = time.monotonic()
                before += await recv_for(ws, 0.1)  # frames already on their way when the stall began
                await recv_for(bws, 0.1)
                during = await recv_for(ws, 0.4)
                assert during == [] and await recv_for(bws, 0.05) == []
                assert sim.stats("binance")["pings_sent"] == pings  # no server pings either
                async with websockets.connect(sim.ws_url("coinbase")) as fresh:  # a new connection is not stalled
                    await fresh.send(json.dumps({"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]}))
                    assert '"type":"match"' in (await recv_until(fresh, lambda f: '"type":"match"' in f))[-1]
                after = await recv_until(ws, lambda f: '"type":"match"' in f, timeout=2)
                assert time.monotonic() - t0 >= 0.85
            last_before = max(m["trade_id"] for m in map(js, before) if m["type"] in ("match", "last_match"))
            first_after = js(after[-1])["trade_id"]
            assert first_after > last_before + 1  # the stall left a gap...
            gap = list(range(last_before + 1, first_after))
            async with httpx.AsyncClient(base_url=sim.rest_url("coinbase")) as http:
                r = await http.get("/products/BTC-USD/trades", params={"after": first_after, "before": last_before, "limit": 1000})
            assert sorted(p["trade_id"] for p in r.json()) == gap  # ...that REST fills
            emitted = {t.trade_id for t in sim.emitted("coinbase") if t.symbol == "BTC-USD"}
            assert set(gap) <= emitted

    run(main())


def test_skip_ids_fillable_binance():
    async def main():
        async with simulator(exchanges=("binance",), rest_rate_per_s=1000.0) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/stream?streams=btcusdt@trade&timeUnit=MICROSECOND") as ws:
                frames = await recv_until(ws, lambda f: '"t":' in f)
                sim.skip_ids("binance", "BTC-USDT", 5)
                frames += await recv_for(ws, 0.6)
            ids = ids_of(check_truth(sim, "binance", frames), "BTC-USDT")
            holes = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
            assert len(holes) == 1 and holes[0][1] - holes[0][0] == 6  # exactly 5 missing
            first = holes[0][0] + 1
            async with httpx.AsyncClient(base_url=sim.rest_url("binance")) as http:
                r = await http.get("/api/v3/historicalTrades", params={"symbol": "BTCUSDT", "fromId": first, "limit": 5})
            assert [p["id"] for p in r.json()] == list(range(first, first + 5))
            assert sim.unfillable("binance") == []
            assert set(range(first, first + 5)) <= {t.trade_id for t in sim.emitted("binance")}
            assert sim.stats("binance")["trades_skipped_ws"] == 5

    run(main())


def test_skip_ids_unfillable_kraken():
    async def main():
        async with simulator(exchanges=("kraken",), rest_rate_per_s=1000.0) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}))
                frames = await recv_until(ws, lambda f: f.startswith('{"channel":"trade"'))
                sim.skip_ids("kraken", "BTC-USD", 4, rest=False)
                frames += await recv_for(ws, 0.6)
                sim.pause("kraken")
            ids = ids_of(check_truth(sim, "kraken", frames), "BTC-USD")
            holes = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
            assert len(holes) == 1 and holes[0][1] - holes[0][0] == 5
            first = holes[0][0] + 1
            assert sim.unfillable("kraken") == [("BTC-USD", first, first + 3)]
            assert sim.last_id("kraken", "BTC-USD") >= first + 4
            emitted = [t.trade_id for t in sim.emitted("kraken") if t.symbol == "BTC-USD"]
            assert not set(range(first, first + 4)) & set(emitted) and emitted[-1] == sim.last_id("kraken", "BTC-USD")
            async with httpx.AsyncClient(base_url=sim.rest_url("kraken")) as http:
                r = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": "0"})
            served = [row[6] for row in r.json()["result"]["XXBTZUSD"]]
            assert served == emitted and holes[0][0] in served and holes[0][1] in served

    run(main())


def test_coinbase_heartbeat_reveals_silently_skipped_trades():
    async def main():
        async with simulator(exchanges=("coinbase",), heartbeat_interval_s=0.15) as sim:
            async with websockets.connect(sim.ws_url("coinbase")) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channels": [
                    {"name": "matches", "product_ids": ["BTC-USD"]}, {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}))
                await recv_until(ws, lambda f: '"type":"match"' in f)
                sim.skip_ids("coinbase", "BTC-USD", 10**6)  # every further BTC-USD trade is hidden from WS
                await recv_for(ws, 0.1)
                frames = await recv_for(ws, 0.6)
            msgs = [js(f) for f in frames]
            assert not any(m["type"] == "match" for m in msgs)
            beats = [m["last_trade_id"] for m in msgs if m["type"] == "heartbeat"]
            assert len(beats) >= 3 and beats[-1] > beats[0]  # ids advance although no match arrives
            assert beats[-1] <= sim.last_id("coinbase", "BTC-USD")

    run(main())


def test_repeat_frames_sends_each_twice():
    async def main():
        async with simulator(exchanges=("kraken",)) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}}))
                await recv_until(ws, lambda f: f.startswith('{"channel":"trade"'))
                sim.repeat_frames("kraken", 3)
                frames = await recv_for(ws, 0.5)
            trade_frames = [f for f in frames if f.startswith('{"channel":"trade"')]
            repeats = [i for i in range(1, len(trade_frames)) if trade_frames[i] == trade_frames[i - 1]]
            assert len(repeats) == 3 and repeats[:1] == [1]
            trades = check_truth(sim, "kraken", frames)
            ids = ids_of(trades, "BTC-USD")
            assert len(ids) > len(set(ids))  # duplicates a client must dedupe
            assert contiguous(sorted(set(ids)))
            assert sim.stats("kraken")["frames_repeated"] == 3

    run(main())


def _sub_frames(exchange: str, variant: str | None) -> tuple[str, str | None]:
    if exchange == "binance":
        return "/stream?streams=btcusdt@trade&timeUnit=MICROSECOND", None
    if exchange == "kraken":
        return "", json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}})
    if variant == "advanced":
        return "", json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
    return "", json.dumps({"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]})


@pytest.mark.parametrize("exchange,variant", [("binance", None), ("kraken", None), ("coinbase", None), ("coinbase", "advanced")])
def test_malformed_frames_become_dead_letters(exchange, variant):
    async def main():
        async with simulator(exchanges=(exchange,), rate=0.0, heartbeat_interval_s=5.0) as sim:
            path, subscribe = _sub_frames(exchange, variant)
            async with websockets.connect(sim.ws_url(exchange, variant) + path) as ws:
                if subscribe:
                    await ws.send(subscribe)
                await recv_for(ws, 0.15)
                sim.send_malformed(exchange, 6)
                frames = [(await asyncio.wait_for(ws.recv(), 2)) for _ in range(6)]
                assert await recv_for(ws, 0.1) == []
            assert [type(f) for f in frames] == [str, str, str, bytes, str, str]  # kinds rotate
            result = parse(exchange, frames)
            assert result.trades.num_rows == 0
            assert [i for i, _ in result.dead] == [0, 1, 2, 3, 4, 5]
            reasons = [r for _, r in result.dead]
            assert "invalid JSON" in reasons[0] and "got `object`" in reasons[1] and ("price" in reasons[1] or "$.p`" in reasons[1])
            assert "qty: not positive ('-" in reasons[2] and "invalid UTF-8" in reasons[3]
            with pytest.raises(UnicodeDecodeError):
                frames[3].decode()
            assert sim.stats(exchange)["malformed_sent"] == 6

    run(main())


def test_refuse_connections_gives_503():
    async def main():
        async with simulator(exchanges=("coinbase",), rate=0.0) as sim:
            sim.refuse_connections("coinbase", 2)
            for variant in (None, "advanced"):
                with pytest.raises(websockets.InvalidStatus) as info:
                    async with websockets.connect(sim.ws_url("coinbase", variant)):
                        pass
                assert info.value.response.status_code == 503
            async with websockets.connect(sim.ws_url("coinbase")) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channels": [{"name": "heartbeat", "product_ids": ["BTC-USD"]}]}))
                assert js(await ws.recv())["type"] == "subscriptions"
            stats = sim.stats("coinbase")
            assert stats["connections_refused"] == 2 and stats["connections_accepted"] == 1

    run(main())


REST_PROBES = {
    "binance": ("/api/v3/trades", {"symbol": "BTCUSDT", "limit": 1}),
    "kraken": ("/0/public/Trades", {"pair": "XBTUSD", "count": 1}),
    "coinbase": ("/products/BTC-USD/trades", {"limit": 1}),
}


def test_rest_errors_then_recovery():
    async def main():
        async with simulator() as sim:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(timeout=5) as http:
                for exchange, (path, params) in REST_PROBES.items():
                    sim.rest_errors(exchange, 2, status=503)
                    url = sim.rest_url(exchange) + path
                    bad = [await http.get(url, params=params) for _ in range(2)]
                    good = await http.get(url, params=params)
                    assert [r.status_code for r in bad] == [503, 503] and good.status_code == 200
                    body = bad[0].json()
                    if exchange == "binance":
                        assert body["code"] == -1001 and "X-MBX-USED-WEIGHT-1M" in bad[0].headers
                    elif exchange == "kraken":
                        assert body == {"error": ["EService:Unavailable"]} and good.json()["error"] == []
                    else:
                        assert body == {"message": "Internal server error"}
                    assert sim.stats(exchange)["rest_errors"] == 2 and sim.stats(exchange)["rest_requests"] == 3

    run(main())


def test_rest_rate_limit_answers_forced_and_token_bucket():
    async def main():
        async with simulator(rest_rate_per_s=5.0) as sim:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(timeout=5) as http:
                for exchange, (path, params) in REST_PROBES.items():
                    url = sim.rest_url(exchange) + path
                    sim.rest_rate_limit(exchange, 1)
                    r = await http.get(url, params=params)
                    if exchange == "binance":
                        assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["code"] == -1003
                    elif exchange == "kraken":
                        assert r.status_code == 200 and r.json() == {"error": ["EGeneral:Too many requests"]}
                    else:
                        assert r.status_code == 429 and r.json() == {"message": "Public rate limit exceeded"}
                    # token bucket: burst = 2 x 5 requests, then limited
                    codes = [await http.get(url, params=params) for _ in range(12)]
                    ok = [not (c.status_code == 429 or "Too many" in c.text) for c in codes]
                    assert ok[:9] == [True] * 9 and ok[-1] is False
                    assert sim.stats(exchange)["rest_rate_limited"] >= 2

    run(main())
