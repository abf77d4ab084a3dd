"""The bus between parsers and the hot writer. In-process by default; Kafka/Redpanda when configured."""

from k2.bus.base import Bus, BusClosed, IngestBatch
from k2.bus.memory import MemoryBus

__all__ = ["Bus", "BusClosed", "IngestBatch", "MemoryBus"]
