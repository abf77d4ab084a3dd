"""In-process bus: a bounded queue. Back-pressure instead of unbounded memory."""

from __future__ import annotations

import queue

from k2.bus.base import BusClosed, IngestBatch

_END = object()


class MemoryBus:
    def __init__(self, max_batches: int = 8) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max_batches)
        self._closed = False
        self._drained = False
        self.published = 0
        self.acked = 0

    def publish(self, batch: IngestBatch) -> None:
        if self._closed:
            raise BusClosed("bus is closed")
        self._q.put(batch)
        self.published += 1

    def consume(self, timeout: float) -> IngestBatch | None:
        if self._drained:
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._drained = True
            return None
        return item

    def ack(self, batch: IngestBatch) -> None:
        self.acked += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(_END)

    @property
    def depth(self) -> int:
        """Batches published and not consumed yet."""
        return self._q.qsize()

    @property
    def capacity(self) -> int:
        return self._q.maxsize

    @property
    def drained(self) -> bool:
        return self._drained
