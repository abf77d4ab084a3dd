"""Capture files: JSON Lines (plain, .gz or .zst), one received text frame per line.

    {"exchange": "binance", "ts_recv": 1784073600002000, "frame": "<frame text exactly as received>", "conn": "c1"}

``ts_recv`` is integer microseconds since the Unix epoch (UTC); ``conn`` (optional) names the connection the
frame came on, so a change of ``conn`` means a reconnect.
"""

from k2.capture.reader import CaptureChunk, read_capture
from k2.capture.writer import CaptureWriter

__all__ = ["CaptureChunk", "CaptureWriter", "read_capture"]
