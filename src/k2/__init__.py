"""K2: a crypto market-data lakehouse.

Exchange frames -> venue parsers -> bus -> hot writer -> hot store (ClickHouse / chdb).
"""

__version__ = "0.1.0"
