"""Simulator configuration."""

from __future__ import annotations

from dataclasses import dataclass

from k2.model.instrument import EXCHANGES, InstrumentTable

#: Port offset of each exchange from ``SimConfig.base_port`` (when it is not 0).
PORT_OFFSETS = {"binance": 0, "kraken": 1, "coinbase": 2}


@dataclass
class SimConfig:
    """Everything the local exchange simulator can be tuned with.

    ``rate`` is trades per second per exchange, spread over that exchange's instruments by the
    ``k2.capture.synth.PROFILES`` weights. Intervals are in seconds; tests use small ones.
    """

    exchanges: tuple[str, ...] = ("binance", "kraken", "coinbase")
    host: str = "127.0.0.1"
    base_port: int = 0  # 0 = ephemeral ports; else binance=base_port, kraken=base_port+1, coinbase=base_port+2
    rate: float = 50.0
    seed: int = 7
    tick_s: float = 0.05
    binance_ping_interval_s: float = 20.0
    binance_max_lifetime_s: float = 86400.0
    binance_max_incoming_per_s: int = 5
    heartbeat_interval_s: float = 1.0
    subscribe_deadline_s: float = 5.0
    history_per_symbol: int = 200_000
    snapshot_size: int = 50
    rest_rate_per_s: float = 20.0
    instruments: InstrumentTable | None = None
    binance_pong_timeout_s: float = 60.0  # a Binance connection with a server ping unanswered this long is closed
    advanced_batch_s: float = 0.25  # Coinbase Advanced Trade market_trades batching period

    def __post_init__(self) -> None:
        unknown = [e for e in self.exchanges if e not in EXCHANGES]
        if unknown or not self.exchanges:
            raise ValueError(f"exchanges must be a non-empty subset of {EXCHANGES}, got {self.exchanges!r}")
        if len(set(self.exchanges)) != len(self.exchanges):
            raise ValueError(f"exchanges listed twice: {self.exchanges!r}")
        positive = ("tick_s", "binance_ping_interval_s", "binance_max_lifetime_s", "heartbeat_interval_s",
                    "subscribe_deadline_s", "rest_rate_per_s", "binance_pong_timeout_s", "advanced_batch_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate!r}")
        if self.history_per_symbol < 1 or self.snapshot_size < 0 or self.binance_max_incoming_per_s < 1:
            raise ValueError("history_per_symbol and binance_max_incoming_per_s must be >= 1, snapshot_size >= 0")
        if not 0 <= self.base_port <= 65533:
            raise ValueError(f"base_port must be 0 or a port number, got {self.base_port!r}")

    def instrument_table(self) -> InstrumentTable:
        """The instruments simulated (the 34 default pairs unless ``instruments`` is set)."""
        return self.instruments if self.instruments is not None else InstrumentTable.default()
