"""Capture file writer (the format of ``k2.capture``)."""

from __future__ import annotations

import os

import msgspec

from k2.capture.reader import CaptureLine, open_capture

_enc = msgspec.json.Encoder()


class CaptureWriter:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fh = open_capture(path, "wb")
        self.lines = 0

    def write(self, exchange: str, ts_recv: int, frame: str, conn: str | None = None) -> None:
        self._fh.write(_enc.encode(CaptureLine(exchange, ts_recv, frame, conn)) + b"\n")
        self.lines += 1

    def write_many(self, records: list[tuple[str, int, str, str | None]]) -> None:
        enc = _enc.encode
        self._fh.write(b"".join(enc(CaptureLine(*r)) + b"\n" for r in records))
        self.lines += len(records)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
