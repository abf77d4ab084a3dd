"""Domain model: instruments and trades. Exact decimals, integer microsecond timestamps."""

from k2.model.instrument import Instrument, InstrumentTable
from k2.model.trade import DEC_SCALE, DECIMAL_TYPE, TRADE_SCHEMA, Trade, trades_from_table

__all__ = [
    "DEC_SCALE",
    "DECIMAL_TYPE",
    "TRADE_SCHEMA",
    "Instrument",
    "InstrumentTable",
    "Trade",
    "trades_from_table",
]
