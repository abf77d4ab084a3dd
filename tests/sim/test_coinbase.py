"""Simulated Coinbase over real sockets: Exchange feed, Advanced Trade feed, subscribe deadline, REST."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import websockets

from tests.sim.simutil import check_truth, contiguous, ids_of, js, parse, recv_for, recv_until, run, simulator, until_trades

SUB = {"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD", "ETH-USD"]},
                                         {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}


def test_exchange_feed_last_match_matches_sequences_heartbeats():
    async def main():
        async with simulator(exchanges=("coinbase",), heartbeat_interval_s=0.2) as sim:
            await asyncio.sleep(0.2)
            async with websockets.connect(sim.ws_url("coinbase")) as ws:
                await ws.send(json.dumps(SUB))
                frames = await recv_for(ws, 0.75)
            msgs = [js(f) for f in frames]
            assert msgs[0] == {"type": "subscriptions", "channels": [
                {"name": "matches", "product_ids": ["BTC-USD", "ETH-USD"]}, {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}
            assert [m["type"] for m in msgs[1:3]] == ["last_match", "last_match"]
            assert [m["product_id"] for m in msgs[1:3]] == ["BTC-USD", "ETH-USD"]
            trades = check_truth(sim, "coinbase", frames)
            for product in ("BTC-USD", "ETH-USD"):
                ids = ids_of(trades, product)
                assert len(ids) > 10 and contiguous(ids)  # last_match then matches: contiguous
                seqs = [m["sequence"] for m in msgs if m.get("product_id") == product and m["type"] in ("match", "last_match")]
                assert [b - a for a, b in zip(seqs, seqs[1:])] == [2] * (len(seqs) - 1)
            matches = [m for m in msgs if m["type"] == "match"]
            truth = {(t.symbol, t.trade_id): t for t in sim.emitted("coinbase")}
            assert all(m["side"] != truth[(m["product_id"], m["trade_id"])].side for m in matches)  # maker side
            beats = [m for m in msgs if m["type"] == "heartbeat"]
            assert 2 <= len(beats) <= 5 and {b["product_id"] for b in beats} == {"BTC-USD"}
            for b in beats:  # last_trade_id = the latest BTC-USD trade sent before it on this connection
                k = msgs.index(b)
                sent = [m["trade_id"] for m in msgs[:k] if m.get("product_id") == "BTC-USD" and "trade_id" in m]
                assert b["last_trade_id"] == sent[-1]
            assert [e.kind for e in parse("coinbase", frames).events].count("heartbeat") == len(beats)

    run(main())


def test_exchange_feed_invalid_product_rejects_whole_request_and_string_channels():
    async def main():
        async with simulator(exchanges=("coinbase",)) as sim:
            async with websockets.connect(sim.ws_url("coinbase")) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channels": [
                    {"name": "matches", "product_ids": ["BTC-USD", "FOO-USD"]}]}))
                first = await recv_for(ws, 0.3)
                assert [js(f) for f in first] == [
                    {"type": "error", "message": "Failed to subscribe", "reason": "FOO-USD is not a valid product"},
                    {"type": "subscriptions", "channels": []},
                ]
                await ws.send(json.dumps({"type": "subscribe", "product_ids": ["SOL-USD"], "channels": ["matches"]}))
                frames = await recv_until(ws, lambda f: '"type":"match"' in f)
                assert js(frames[0]) == {"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["SOL-USD"]}]}
                assert js(frames[-1])["product_id"] == "SOL-USD"
                await ws.send(json.dumps({"type": "unsubscribe", "channels": [{"name": "matches", "product_ids": ["SOL-USD"]}]}))
                await recv_until(ws, lambda f: f == '{"type":"subscriptions","channels":[]}')
                assert not any('"match"' in f for f in await recv_for(ws, 0.25))

    run(main())


def test_subscribe_deadline_closes_idle_connections():
    async def main():
        async with simulator(exchanges=("coinbase",), subscribe_deadline_s=0.3) as sim:
            for path in ("", "advanced"):
                async with websockets.connect(sim.ws_url("coinbase", path or None)) as idle:
                    assert await recv_for(idle, 1.2) == []
                    assert idle.close_code == 1008 and idle.close_reason == "subscribe timeout"
            async with websockets.connect(sim.ws_url("coinbase", "advanced")) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
                await recv_for(ws, 0.5)
                assert ws.close_code is None
            assert sim.stats("coinbase")["closed_subscribe_deadline"] == 2

    run(main())


def test_advanced_feed_snapshot_batches_heartbeats_sequence_num():
    async def main():
        async with simulator(exchanges=("coinbase",), snapshot_size=15, heartbeat_interval_s=0.2) as sim:
            await until_trades(sim, "coinbase", "ETH-USD", 16)
            async with websockets.connect(sim.ws_url("coinbase", "advanced")) as ws:
                await ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"}))
                await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
                frames = await recv_for(ws, 0.8)
            msgs = [js(f) for f in frames]
            assert [m["sequence_num"] for m in msgs] == list(range(len(msgs)))
            assert all(m["client_id"] == "" and m["timestamp"].endswith("Z") for m in msgs)
            assert msgs[0]["channel"] == "subscriptions"
            assert msgs[0]["events"] == [{"subscriptions": {"market_trades": ["BTC-USD", "ETH-USD"]}}]
            snap = msgs[1]
            assert snap["channel"] == "market_trades" and snap["events"][0]["type"] == "snapshot"
            products = [t["product_id"] for t in snap["events"][0]["trades"]]
            assert products == ["BTC-USD"] * 15 + ["ETH-USD"] * 15
            subs2 = next(m for m in msgs[2:] if m["channel"] == "subscriptions")
            assert subs2["events"] == [{"subscriptions": {"market_trades": ["BTC-USD", "ETH-USD"], "heartbeats": ["heartbeats"]}}]
            updates = [m for m in msgs if m["channel"] == "market_trades" and m["events"][0]["type"] == "update"]
            assert 2 <= len(updates) <= 4  # one batch per 250 ms
            assert any(len(u["events"][0]["trades"]) > 1 for u in updates)
            beats = [m for m in msgs if m["channel"] == "heartbeats"]
            assert [b["events"][0]["heartbeat_counter"] for b in beats] == [str(i + 1) for i in range(len(beats))]
            assert len(beats) >= 3 and " +0000 UTC m=+" in beats[0]["events"][0]["current_time"]
            trades = check_truth(sim, "coinbase", frames)
            for product in ("BTC-USD", "ETH-USD"):
                ids = sorted(ids_of(trades, product))
                assert len(ids) > 15 and contiguous(ids)  # snapshot then updates: no gap, no overlap
            first = snap["events"][0]["trades"][0]
            truth = {(t.symbol, t.trade_id): t for t in sim.emitted("coinbase")}
            t = truth[("BTC-USD", int(first["trade_id"]))]
            assert first["side"] == ("BUY" if t.side == "sell" else "SELL") and isinstance(first["trade_id"], str)

    run(main())


def test_rest_trades_after_before_and_headers():
    async def main():
        async with simulator(exchanges=("coinbase",), rate=400.0, rest_rate_per_s=1000.0) as sim:
            await asyncio.sleep(0.4)
            sim.pause("coinbase")
            truth = [t for t in sim.emitted("coinbase") if t.symbol == "ETH-USD"]
            ids = [t.trade_id for t in truth]
            async with httpx.AsyncClient(base_url=sim.rest_url("coinbase"), timeout=5) as http:
                r = await http.get("/products/ETH-USD/trades")
                page = r.json()
                assert [p["trade_id"] for p in page] == ids[::-1][:100]  # newest first, default 100
                assert r.headers["CB-BEFORE"] == str(page[0]["trade_id"]) and r.headers["CB-AFTER"] == str(page[-1]["trade_id"])
                # page older with after=CB-AFTER until exhausted
                got, after = [], ids[-1] + 1
                while True:
                    r = await http.get("/products/ETH-USD/trades", params={"after": after, "limit": 6})
                    page = r.json()
                    if not page:
                        break
                    assert all(p["trade_id"] < after for p in page)
                    got.extend(page)
                    after = int(r.headers["CB-AFTER"])
                assert [p["trade_id"] for p in got] == ids[::-1]
                t_by_id = {t.trade_id: t for t in truth}
                for p in got:
                    t = t_by_id[p["trade_id"]]
                    assert Decimal(p["price"]) == Decimal(t.price) and len(p["price"].split(".")[1]) == 8
                    assert Decimal(p["size"]) == Decimal(t.qty) and p["side"] != t.side
                    assert p["time"].endswith("Z") and len(p["time"]) == 27
                # before=Y: the oldest trades newer than Y, newest first
                r = await http.get("/products/ETH-USD/trades", params={"before": ids[3], "limit": 4})
                assert [p["trade_id"] for p in r.json()] == ids[4:8][::-1]
                assert r.headers["CB-BEFORE"] == str(ids[7]) and r.headers["CB-AFTER"] == str(ids[4])
                r = await http.get("/products/ETH-USD/trades", params={"before": ids[-1]})
                assert r.json() == [] and "CB-BEFORE" not in r.headers
                r = await http.get("/products/FOO-USD/trades")
                assert r.status_code == 404 and r.json() == {"message": "NotFound"}

    run(main())
