"""Driving a simulator from elsewhere: the /_sim HTTP routes, SimulatorThread, serve() and fixed ports."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import httpx
import pytest
import websockets.sync.client

from k2.sim import SimConfig, SimulatorThread, serve
from tests.sim.simutil import FAST, check_truth, contiguous, ids_of, recv_for, run, simulator


def test_state_emitted_and_fault_routes():
    async def main():
        async with simulator(exchanges=("kraken",), rest_rate_per_s=5.0) as sim:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(base_url=sim.rest_url("kraken"), timeout=5) as http:
                post = lambda body: http.post("/_sim/fault", json=body)  # noqa: E731
                assert (await post({"kind": "skip_ids", "symbol": "ETH-USD", "count": 3, "rest": False})).json() == {"ok": True, "kind": "skip_ids"}
                await asyncio.sleep(0.5)
                assert (await post({"kind": "pause"})).status_code == 200
                state = (await http.get("/_sim/state")).json()
                assert state["exchange"] == "kraken" and state["stats"]["paused"] is True
                assert set(state["last_ids"]) == {i.symbol for i in sim.config.instrument_table().for_exchange("kraken")}
                assert state["last_ids"]["BTC-USD"] == sim.last_id("kraken", "BTC-USD") > 0
                [[symbol, first, last]] = state["unfillable"]
                assert symbol == "ETH-USD" and last - first == 2
                emitted = (await http.get("/_sim/emitted")).json()
                assert state["emitted"] == len(emitted) == len(sim.emitted("kraken"))
                assert emitted[0] == {
                    "exchange": "kraken", "symbol": "BTC-USD", "native_symbol": "BTC/USD", "trade_id": emitted[0]["trade_id"],
                    "price": emitted[0]["price"], "qty": emitted[0]["qty"], "side": emitted[0]["side"], "ts_us": emitted[0]["ts_us"],
                }
                assert Decimal(emitted[0]["price"]) > 0 and emitted[0]["side"] in ("buy", "sell")
                eth = (await http.get("/_sim/emitted", params={"symbol": "ETH-USD"})).json()
                assert all(t["symbol"] == "ETH-USD" for t in eth) and not any(first <= t["trade_id"] <= last for t in eth)
                # errors are 400s naming the problem
                bad = await post({"kind": "explode"})
                assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]
                bad = await post({"kind": "stall", "seconds": "long"})
                assert bad.status_code == 400 and "wrong type" in bad.json()["error"]
                bad = await post({"kind": "skip_ids", "symbol": "NOPE-USD", "count": 1})
                assert bad.status_code == 400 and "NOPE-USD" in bad.json()["error"]
                # faults through the route act like the methods
                assert (await post({"kind": "rest_errors", "count": 1, "status": 502})).status_code == 200
                assert (await http.get("/0/public/Trades", params={"pair": "XBTUSD"})).status_code == 502
                assert (await post({"kind": "rate_limit", "count": 1})).status_code == 200
                assert (await http.get("/0/public/Trades", params={"pair": "XBTUSD"})).json()["error"] == ["EGeneral:Too many requests"]
                # /_sim/* never counts as REST traffic, even past the bucket's burst
                for _ in range(30):
                    assert (await http.get("/_sim/state")).status_code == 200
                assert sim.stats("kraken")["rest_requests"] == 2
                assert (await post({"kind": "resume"})).status_code == 200
                assert sim.stats("kraken")["paused"] is False

    run(main())


def test_fault_route_drop_and_shutdown():
    async def main():
        async with simulator(exchanges=("coinbase",)) as sim:
            async with httpx.AsyncClient(base_url=sim.rest_url("coinbase"), timeout=5) as http:
                async with websockets.connect(sim.ws_url("coinbase", "advanced")) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
                    await ws.recv()
                    assert (await http.post("/_sim/fault", json={"kind": "shutdown", "grace_s": 0.2})).status_code == 200
                    await recv_for(ws, 2.0)
                    assert ws.close_code == 1001
                async with websockets.connect(sim.ws_url("coinbase")) as ws:
                    assert (await http.post("/_sim/fault", json={"kind": "drop"})).status_code == 200
                    await recv_for(ws, 2.0)
                    assert ws.close_code == 1006  # abnormal: no close frame
            assert sim.stats("coinbase")["connections_dropped"] == 1

    run(main())


def test_simulator_thread_from_synchronous_code():
    config = SimConfig(**{**FAST, "exchanges": ("kraken", "binance")})
    with SimulatorThread(config) as sim:
        env = sim.settings_env()
        assert set(env) == {"K2_KRAKEN_WS_URL", "K2_KRAKEN_REST_URL", "K2_BINANCE_WS_URL", "K2_BINANCE_REST_URL"}
        assert env["K2_KRAKEN_WS_URL"].endswith("/v2") and env["K2_BINANCE_REST_URL"].startswith("http://127.0.0.1:")
        with websockets.sync.client.connect(env["K2_KRAKEN_WS_URL"]) as ws:
            assert '"system":"online"' in ws.recv(timeout=2)
            ws.send(json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True}}))
            frames = []
            for _ in range(25):
                frames.append(ws.recv(timeout=2))
        sim.pause()
        trades = check_truth(sim, "kraken", frames)  # type: ignore[arg-type]
        assert contiguous(ids_of(trades, "BTC-USD")) and len(trades) > 5
        sim.skip_ids("kraken", "BTC-USD", 2, rest=False)
        sim.resume("kraken")
        r = httpx.get(env["K2_BINANCE_REST_URL"] + "/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 2}, timeout=5)
        assert r.status_code == 200 and len(r.json()) == 2
        assert sim.stats("binance")["rest_requests"] == 1
        port = int(env["K2_KRAKEN_REST_URL"].rsplit(":", 1)[1])
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _free_base_port() -> int:
    for _ in range(20):
        socks = []
        try:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            socks.append(first)
            if base > 65000:
                continue
            for offset in (1, 2):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three consecutive free ports")


def test_serve_prints_addresses_and_stops_on_event(capsys):
    base = _free_base_port()

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(serve(SimConfig(**{**FAST, "base_port": base}), stop))
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(timeout=5) as http:
            for port, exchange in ((base, "binance"), (base + 1, "kraken"), (base + 2, "coinbase")):
                assert (await http.get(f"http://127.0.0.1:{port}/_sim/state")).json()["exchange"] == exchange
        stop.set()
        await asyncio.wait_for(task, 5)

    run(main())
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("binance ") and f"ws://127.0.0.1:{base}" in out[0] and f"http://127.0.0.1:{base}" in out[0]
    assert f"ws://127.0.0.1:{base + 1}/v2" in out[1] and f"ws://127.0.0.1:{base + 2}/advanced" in out[2]
    assert f"export K2_KRAKEN_WS_URL=ws://127.0.0.1:{base + 1}/v2" in out
    assert f"export K2_COINBASE_REST_URL=http://127.0.0.1:{base + 2}" in out
    assert len([line for line in out if line.startswith("export K2_")]) == 6
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", base + 1), timeout=1).close()


def test_ws_urls_and_settings_env_variants():
    async def main():
        async with simulator(exchanges=("coinbase",), rate=0.0) as sim:
            port = sim.port("coinbase")
            assert sim.ws_url("coinbase") == f"ws://127.0.0.1:{port}"
            assert sim.ws_url("coinbase", "advanced") == f"ws://127.0.0.1:{port}/advanced"
            assert sim.rest_url("coinbase") == f"http://127.0.0.1:{port}"
            assert sim.settings_env(coinbase_advanced=True) == {
                "K2_COINBASE_WS_URL": f"ws://127.0.0.1:{port}/advanced", "K2_COINBASE_REST_URL": f"http://127.0.0.1:{port}"}
            with pytest.raises(KeyError):
                sim.ws_url("kraken")
            with pytest.raises(ValueError):
                sim.ws_url("coinbase", "legacy")
            await sim.stop()
            await sim.stop()  # idempotent

    run(main())
