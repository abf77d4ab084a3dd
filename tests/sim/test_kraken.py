"""Simulated Kraken over real sockets: status, subscribe acks, snapshot, updates, ping, heartbeat, REST."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import websockets

from tests.sim.simutil import check_truth, contiguous, ids_of, js, parse, recv_for, recv_until, run, simulator, until_trades


def sub(symbols: list[str], snapshot: bool | None = None, req_id: int = 1, method: str = "subscribe") -> str:
    params: dict = {"channel": "trade", "symbol": symbols}
    if snapshot is not None:
        params["snapshot"] = snapshot
    return json.dumps({"method": method, "params": params, "req_id": req_id})


def test_status_acks_snapshot_and_updates_equal_ground_truth():
    async def main():
        async with simulator(exchanges=("kraken",), snapshot_size=20) as sim:
            await until_trades(sim, "kraken", "BTC-USD", 25)
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                status = js(await ws.recv())
                assert status["channel"] == "status" and status["type"] == "update"
                d = status["data"][0]
                assert d["system"] == "online" and d["api_version"] == "v2" and d["connection_id"] > 2**63
                await ws.send(sub(["BTC/USD", "XBT/USD", "ETH/USD"], snapshot=True, req_id=7))
                frames = await recv_for(ws, 0.7)
            acks = [js(f) for f in frames if f.startswith('{"method"') or f.startswith('{"error"')]
            assert [(a.get("success"), a.get("result", {}).get("symbol", a.get("symbol"))) for a in acks] == [
                (True, "BTC/USD"), (False, "XBT/USD"), (True, "ETH/USD")
            ]
            assert acks[0]["result"] == {"channel": "trade", "snapshot": True, "symbol": "BTC/USD"} and acks[0]["req_id"] == 7
            assert acks[1]["error"] == "Currency pair not supported XBT/USD" and acks[1]["req_id"] == 7
            assert acks[0]["time_in"].endswith("Z") and len(acks[0]["time_in"]) == 27
            # snapshot right after each ack: the last 20 trades of that symbol
            msgs = [js(f) for f in frames]
            i = next(k for k, m in enumerate(msgs) if m.get("result", {}).get("symbol") == "BTC/USD")
            snap = msgs[i + 1]
            assert snap["type"] == "snapshot" and len(snap["data"]) == 20
            assert {x["symbol"] for x in snap["data"]} == {"BTC/USD"}
            updates = [m for m in msgs if m.get("type") == "update"]
            assert updates and all(len({x["symbol"] for x in m["data"]}) == 1 for m in updates)
            assert any(len(m["data"]) > 1 for m in updates)  # same-tick trades batched
            trades = check_truth(sim, "kraken", frames)
            for symbol in ("BTC-USD", "ETH-USD"):
                ids = ids_of(trades, symbol)  # snapshot then updates: no gap, no overlap
                assert len(ids) > 20 and contiguous(ids)
            events = parse("kraken", frames).events
            assert [e.kind for e in events] == ["ack", "subscribe_error", "ack"]
            # numbers are written from the exact decimal text
            first = snap["data"][0]
            raw = frames[i + 1]
            assert f'"price":{json.loads(raw, parse_float=str)["data"][0]["price"]}' in raw
            assert Decimal(str(first["price"])) > 0

    run(main())


def test_snapshot_defaults_to_false_unsubscribe_ping_and_heartbeat():
    async def main():
        async with simulator(exchanges=("kraken",), heartbeat_interval_s=0.15) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                await ws.recv()  # status
                await ws.send(sub(["SOL/USD"], snapshot=None, req_id=3))
                frames = await recv_until(ws, lambda f: f.startswith('{"channel":"trade"'))
                assert not any('"snapshot"' in f and '"type":"snapshot"' in f for f in frames)
                await ws.send(json.dumps({"method": "ping", "req_id": 42}))
                pong = js((await recv_until(ws, lambda f: '"pong"' in f))[-1])
                assert pong["method"] == "pong" and pong["req_id"] == 42 and "time_in" in pong and "time_out" in pong
                await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "heartbeat"}, "req_id": 4}))
                hb_ack = js((await recv_until(ws, lambda f: '"req_id":4' in f))[-1])
                assert hb_ack["success"] is True and hb_ack["result"] == {"channel": "heartbeat"}
                await ws.send(sub(["SOL/USD"], req_id=5, method="unsubscribe"))
                unsub = js((await recv_until(ws, lambda f: '"req_id":5' in f))[-1])
                assert unsub["method"] == "unsubscribe" and unsub["success"] is True and unsub["result"]["symbol"] == "SOL/USD"
                quiet = await recv_for(ws, 0.65)
                assert not any(f.startswith('{"channel":"trade"') for f in quiet)
                assert 3 <= sum(f == '{"channel":"heartbeat"}' for f in quiet) <= 5  # ~1 per 0.15 s when idle
                await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}, "req_id": 6}))
                err = js((await recv_until(ws, lambda f: '"req_id":6' in f))[-1])
                assert err["success"] is False and "book" in err["error"]

    run(main())


def test_no_heartbeat_while_trades_flow():
    async def main():
        async with simulator(exchanges=("kraken",), rate=400.0, heartbeat_interval_s=0.3) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                await ws.send(sub(["BTC/USD"], snapshot=False))
                frames = await recv_for(ws, 0.7)
            assert sum(f.startswith('{"channel":"trade"') for f in frames) > 10
            assert sum(f == '{"channel":"heartbeat"}' for f in frames) == 0

    run(main())


def test_rest_trades_since_and_last_cursor():
    async def main():
        async with simulator(exchanges=("kraken",), rate=400.0, rest_rate_per_s=1000.0) as sim:
            await asyncio.sleep(0.5)
            sim.pause("kraken")
            truth = [t for t in sim.emitted("kraken") if t.symbol == "BTC-USD"]
            async with httpx.AsyncClient(base_url=sim.rest_url("kraken"), timeout=5) as http:
                r = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": "0", "count": 5})
                body = r.json()
                assert r.status_code == 200 and body["error"] == [] and set(body["result"]) == {"XXBTZUSD", "last"}
                rows = body["result"]["XXBTZUSD"]
                assert [row[6] for row in rows] == [t.trade_id for t in truth[:5]]
                assert body["result"]["last"] == str(truth[4].ts_us * 1000)
                # every page is the oldest `count` trades strictly after `since`
                since, seen = 0, {}
                for _ in range(200):
                    r = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": str(since), "count": 9})
                    res = r.json()["result"]
                    rows = res["XXBTZUSD"]
                    expect = [t for t in truth if t.ts_us * 1000 > since][:9]
                    assert [row[6] for row in rows] == [t.trade_id for t in expect]
                    assert res["last"] == str(expect[-1].ts_us * 1000)
                    if all(row[6] in seen for row in rows):
                        break
                    seen.update((row[6], row) for row in rows)
                    # step back 1 ns so trades sharing the last timestamp are not skipped; dedupe by id
                    since = int(res["last"]) - 1
                else:
                    raise AssertionError("paging did not end")
                end = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": res["last"]})
                assert end.json()["result"] == {"XXBTZUSD": [], "last": res["last"]}  # nothing newer: since echoed
                by_id = seen
                assert sorted(by_id) == [t.trade_id for t in truth]
                for t in truth:
                    price, vol, when, side, kind, misc, tid = by_id[t.trade_id]
                    assert Decimal(price) == Decimal(t.price) and len(price.split(".")[1]) == 2
                    assert Decimal(vol) == Decimal(t.qty) and len(vol.split(".")[1]) == 8
                    assert side == ("b" if t.side == "buy" else "s") and kind in ("m", "l") and misc == ""
                raw = (await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": "0", "count": 1})).text
                assert f'{truth[0].ts_us // 10**6}.{truth[0].ts_us % 10**6:06d}' in raw  # exact time literal
                # seconds form of since
                secs = truth[len(truth) // 2].ts_us // 10**6
                r = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "since": str(secs), "count": 1000})
                assert [row[6] for row in r.json()["result"]["XXBTZUSD"]] == [t.trade_id for t in truth if t.ts_us > secs * 10**6]
                # without since: the most recent
                r = await http.get("/0/public/Trades", params={"pair": "XBTUSD", "count": 3})
                assert [row[6] for row in r.json()["result"]["XXBTZUSD"]] == [t.trade_id for t in truth[-3:]]
                for pair, key in (("XDGUSD", "XDGUSD"), ("SOLUSD", "SOLUSD"), ("ETHUSD", "XETHZUSD"), ("XXBTZUSD", "XXBTZUSD")):
                    r = await http.get("/0/public/Trades", params={"pair": pair, "count": 1})
                    assert key in r.json()["result"]
                r = await http.get("/0/public/Trades", params={"pair": "FOOBAR"})
                assert r.status_code == 200 and r.json() == {"error": ["EQuery:Unknown asset pair"]}

    run(main())


def test_maintenance_status_then_close():
    async def main():
        async with simulator(exchanges=("kraken",)) as sim:
            async with websockets.connect(sim.ws_url("kraken")) as ws:
                await ws.recv()
                await ws.send(sub(["BTC/USD"]))
                await recv_until(ws, lambda f: f.startswith('{"channel":"trade"'))
                sim.announce_shutdown("kraken", grace_s=0.3)
                frames = await recv_for(ws, 2.0)
                assert ws.close_code == 1001
            statuses = [js(f) for f in frames if '"channel":"status"' in f]
            assert [s["data"][0]["system"] for s in statuses] == ["maintenance"]
            assert [e.detail["system"] for e in parse("kraken", frames).events if e.kind == "status"] == ["maintenance"]

    run(main())
