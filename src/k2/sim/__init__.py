"""Local exchange simulator: Binance, Kraken and Coinbase public-trade protocols on 127.0.0.1.

``ExchangeSimulator`` serves each exchange's WebSocket and REST endpoints from its own aiohttp server,
generates a deterministic market, keeps the ground truth (``emitted``, ``unfillable``) and injects faults.
``SimulatorThread`` runs one in a background thread; ``serve`` runs one in the foreground.
"""

from __future__ import annotations

from k2.sim.config import SimConfig
from k2.sim.market import SimTrade
from k2.sim.serve import serve
from k2.sim.simulator import ExchangeSimulator
from k2.sim.thread import SimulatorProxy, SimulatorThread

__all__ = ["ExchangeSimulator", "SimConfig", "SimTrade", "SimulatorProxy", "SimulatorThread", "serve"]
