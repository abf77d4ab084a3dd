"""Simulated Binance over real sockets: streams, control methods, limits, pings, lifetime, REST."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import httpx
import websockets

from tests.sim.simutil import check_truth, contiguous, ids_of, js, parse, recv_for, recv_until, run, simulator


def test_combined_stream_subscribe_ack_and_trades_equal_ground_truth():
    async def main():
        async with simulator(exchanges=("binance",)) as sim:
            url = sim.ws_url("binance") + "/stream?streams=btcusdt@trade&timeUnit=MICROSECOND"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade", "fooxyz@trade", "solusdt@aggTrade"], "id": 1}))
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "q2"}))
                frames = await recv_for(ws, 0.6)
            replies = [js(f) for f in frames if '"id"' in f[:40] or f.startswith('{"result"')]
            assert replies[:2] == [
                {"result": None, "id": 1},
                {"result": ["btcusdt@trade", "ethusdt@trade", "fooxyz@trade", "solusdt@aggTrade"], "id": "q2"},
            ]
            trades = check_truth(sim, "binance", frames)
            assert {t.symbol for t in trades} == {"BTC-USDT", "ETH-USDT"}  # unknown symbol and aggTrade: nothing
            for symbol in ("BTC-USDT", "ETH-USDT"):
                ids = ids_of(trades, symbol)
                assert len(ids) > 10 and contiguous(ids)
            data = [js(f) for f in frames if f.startswith('{"stream"')]
            assert all(d["stream"] in ("btcusdt@trade", "ethusdt@trade") for d in data)
            sample = data[0]["data"]
            assert set(sample) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
            assert len(sample["p"].split(".")[1]) == 8 and len(sample["q"].split(".")[1]) == 8
            assert sample["T"] > 10**15  # µs

    run(main())


def test_raw_ws_in_milliseconds_and_path_streams():
    async def main():
        async with simulator(exchanges=("binance",)) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/ws/btcusdt@trade") as ws:
                frames = await recv_for(ws, 0.4)
            assert frames and all(f.startswith('{"e":"trade"') for f in frames)
            trades = check_truth(sim, "binance", frames, ms=True)
            assert contiguous(ids_of(trades, "BTC-USDT"))
            assert all(js(f)["T"] < 10**14 for f in frames)
            async with websockets.connect(sim.ws_url("binance") + "/ws") as ws:
                assert await recv_for(ws, 0.2) == []  # nothing subscribed, nothing sent
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 9}))
                frames = await recv_until(ws, lambda f: f.startswith('{"e":"trade"'))
            assert js(frames[0]) == {"result": None, "id": 9}
            assert js(frames[-1])["s"] == "DOGEUSDT"

    run(main())


def test_control_errors_and_properties():
    async def main():
        async with simulator(exchanges=("binance",), rate=0.0) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/ws") as ws:
                requests = [
                    "{not json",
                    json.dumps({"method": "FLY", "id": 4}),
                    json.dumps({"params": [], "id": 5}),
                    json.dumps({"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 6}),
                ]
                replies = []
                for text in requests:  # paced: 5 messages per second at most
                    await ws.send(text)
                    replies.append(js(await asyncio.wait_for(ws.recv(), 2)))
                    await asyncio.sleep(0.21)
            assert replies[0]["code"] == 3 and replies[0]["msg"].startswith("Invalid JSON:")
            assert replies[1]["code"] == 2 and "unknown variant `FLY`" in replies[1]["msg"] and replies[1]["id"] == 4
            assert replies[2] == {"code": 2, "msg": "Invalid request: missing field `method`", "id": 5}
            assert replies[3]["code"] == 2 and replies[3]["id"] == 6
            async with websockets.connect(sim.ws_url("binance") + "/ws") as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["x@trade"], "id": {"bad": 1}}))
                assert js(await ws.recv())["code"] == 2
                await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 1}))
                assert js(await ws.recv()) == {"result": False, "id": 1}
                await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 2}))
                assert js(await ws.recv()) == {"result": None, "id": 2}
                await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["speed", 1], "id": 3}))
                assert js(await ws.recv()) == {"code": 0, "msg": "Unknown property", "id": 3}

    run(main())


def test_incoming_message_rate_closes_with_1008():
    async def main():
        # server pings (answered by pongs, which count too) kept out of the way
        async with simulator(exchanges=("binance",), binance_max_incoming_per_s=5, binance_ping_interval_s=10.0) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/ws") as ws:
                for i in range(4):  # 4 pings + 3 text frames = 7 > 5 in one second
                    await ws.ping(f"p{i}".encode())
                for i in range(3):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                await recv_for(ws, 2.0)
                assert ws.close_code == 1008
            assert sim.stats("binance")["closed_incoming_rate"] == 1
            async with websockets.connect(sim.ws_url("binance") + "/ws") as ws:  # paced: stays open
                for i in range(7):  # 5 per second at most: 7 in 1.2 s
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                    assert js(await asyncio.wait_for(ws.recv(), 2)) == {"result": [], "id": i}
                    await asyncio.sleep(0.2)
                assert ws.close_code is None

    run(main())


def test_server_pings_and_pong_timeout():
    async def main():
        async with simulator(exchanges=("binance",), binance_ping_interval_s=0.25, binance_pong_timeout_s=0.6) as sim:
            async with aiohttp.ClientSession() as session:
                # autoping=False: this client never answers the server's pings
                async with session.ws_connect(sim.ws_url("binance") + "/ws", autoping=False) as ws:
                    pings, closed = [], None
                    async with asyncio.timeout(3):
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.PING:
                                pings.append(msg.data)
                            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                                closed = msg.data
                                break
                    assert len(pings) >= 2 and all(p.isdigit() for p in pings)
                    assert closed == 1008 or ws.close_code == 1008
                # the websockets client answers pings (4 pongs/s, within the incoming budget): it stays open
                async with websockets.connect(sim.ws_url("binance") + "/ws") as wsc:
                    await recv_for(wsc, 0.9)
                    assert wsc.close_code is None
            assert sim.stats("binance")["closed_pong_timeout"] == 1
            assert sim.stats("binance")["pings_sent"] >= 5

    run(main())


def test_connection_lifetime_limit():
    async def main():
        async with simulator(exchanges=("binance",), binance_max_lifetime_s=0.5) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/stream?streams=btcusdt@trade") as ws:
                frames = await recv_for(ws, 2.0)
                assert ws.close_code == 1001
            assert frames  # data flowed until the lifetime ended
            assert sim.stats("binance")["closed_lifetime"] == 1

    run(main())


def test_server_shutdown_notice_combined_and_raw():
    async def main():
        async with simulator(exchanges=("binance",), rate=0.0) as sim:
            async with websockets.connect(sim.ws_url("binance") + "/stream?timeUnit=MICROSECOND") as combined, \
                    websockets.connect(sim.ws_url("binance") + "/ws") as raw:
                await asyncio.sleep(0.1)
                sim.announce_shutdown("binance", grace_s=0.3)
                c_frames, r_frames = await asyncio.gather(recv_for(combined, 2), recv_for(raw, 2))
                assert combined.close_code == 1001 and raw.close_code == 1001
            c, r = js(c_frames[0]), js(r_frames[0])
            assert c["stream"] == "!serverShutdown" and c["data"]["e"] == "serverShutdown" and c["data"]["E"] > 10**15
            assert set(r) == {"e", "E"} and r["e"] == "serverShutdown" and r["E"] < 10**14
            assert [e.kind for e in parse("binance", c_frames).events] == ["shutdown"]
            assert [e.kind for e in parse("binance", r_frames).events] == ["shutdown"]

    run(main())


def test_rest_historical_trades_pagination_and_recent():
    async def main():
        async with simulator(exchanges=("binance",), rate=400.0, rest_rate_per_s=1000.0) as sim:
            await asyncio.sleep(0.5)
            sim.pause("binance")
            truth = [t for t in sim.emitted("binance") if t.symbol == "BTC-USDT"]
            base = sim.rest_url("binance")
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                got, from_id, weights = [], truth[0].trade_id, []
                while True:
                    r = await http.get("/api/v3/historicalTrades", params={"symbol": "BTCUSDT", "fromId": from_id, "limit": 7},
                                       headers={"X-MBX-TIME-UNIT": "MICROSECOND"})
                    assert r.status_code == 200
                    weights.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
                    page = r.json()
                    if not page:
                        break
                    assert [p["id"] for p in page] == list(range(from_id, from_id + len(page)))  # inclusive, ascending
                    got.extend(page)
                    from_id = page[-1]["id"] + 1
                assert weights == [25 * (i + 1) for i in range(len(weights))]
                assert [g["id"] for g in got] == [t.trade_id for t in truth]
                for g, t in zip(got, truth):
                    assert Decimal(g["price"]) == Decimal(t.price) and Decimal(g["qty"]) == Decimal(t.qty)
                    assert len(g["price"].split(".")[1]) == 8 and g["time"] == t.ts_us
                    assert g["isBuyerMaker"] == (t.side == "sell") and g["isBestMatch"] is True
                    assert Decimal(g["quoteQty"]) == Decimal(t.price) * Decimal(t.qty)
                r = await http.get("/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 5})
                assert [p["id"] for p in r.json()] == [t.trade_id for t in truth[-5:]]
                assert [p["time"] for p in r.json()] == [t.ts_us // 1000 for t in truth[-5:]]  # ms by default
                r = await http.get("/api/v3/historicalTrades", params={"symbol": "BTCUSDT"})
                assert len(r.json()) == min(500, len(truth)) and r.json()[-1]["id"] == truth[-1].trade_id
                r = await http.get("/api/v3/historicalTrades", params={"symbol": "NOPEUSDT"})
                assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}

    run(main())


def test_rest_weight_budget_gives_429_with_retry_after():
    async def main():
        async with simulator(exchanges=("binance",), rate=0.0, rest_rate_per_s=10_000.0) as sim:
            async with httpx.AsyncClient(base_url=sim.rest_url("binance"), timeout=5) as http:
                for _ in range(240):
                    r = await http.get("/api/v3/trades", params={"symbol": "ETHUSDT", "limit": 1})
                    assert r.status_code == 200
                assert r.headers["X-MBX-USED-WEIGHT-1M"] == "6000"
                r = await http.get("/api/v3/trades", params={"symbol": "ETHUSDT", "limit": 1})
                assert r.status_code == 429 and r.json()["code"] == -1003
                assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert sim.stats("binance")["rest_rate_limited"] == 1

    run(main())
