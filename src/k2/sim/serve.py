"""``serve``: run a simulator in the foreground (what ``k2 simulate`` runs)."""

from __future__ import annotations

import asyncio

from k2.sim.config import SimConfig
from k2.sim.simulator import ExchangeSimulator


def describe(sim: ExchangeSimulator) -> list[str]:
    """One line per exchange with its WebSocket and REST URLs, then the ``export K2_...=...`` lines."""
    lines = []
    for name in sim.exchanges:
        ws = sim.ws_url(name)
        if name == "binance":
            ws = f"{ws}/stream?timeUnit=MICROSECOND (or {ws}/ws)"
        elif name == "coinbase":
            ws = f"{ws} (Advanced Trade: {sim.ws_url(name, 'advanced')})"
        lines.append(f"{name:<9} ws {ws}  rest {sim.rest_url(name)}")
    lines.extend(f"export {key}={value}" for key, value in sim.settings_env().items())
    return lines


def settings_json(sim: ExchangeSimulator) -> str:
    """One JSON line: the settings pointing K2 at ``sim`` for either Coinbase feed (read by `k2 up --simulate`)."""
    import json

    urls = {key[3:].lower(): value for key, value in sim.settings_env().items()}
    if "coinbase" in sim.exchanges:
        urls["coinbase_advanced_ws_url"] = sim.ws_url("coinbase", "advanced")
    return json.dumps({"k2_simulator": urls})


async def serve(config: SimConfig, stop: asyncio.Event | None = None, *, json_line: bool = False) -> None:
    """Start a simulator, print its addresses and settings, and run until ``stop`` is set or cancelled."""
    sim = ExchangeSimulator(config)
    await sim.start()
    try:
        if json_line:
            print(settings_json(sim), flush=True)
        for line in describe(sim):
            print(line, flush=True)
        await (stop if stop is not None else asyncio.Event()).wait()
    finally:
        await sim.stop()
