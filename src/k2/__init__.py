"""K2: a crypto market-data lakehouse.

Exchange frames -> venue parsers -> bus -> hot writer -> hot store (ClickHouse / chdb) -> cold tier (Iceberg);
the API, the dashboard and :func:`k2.connect` (notebooks) read both tiers.
"""

__version__ = "0.1.0"


def connect(target, *, api_key=None, config=None):
    """A notebook client for a K2 API URL or a local data directory (see :mod:`k2.client`)."""
    from k2.client import connect as _connect

    return _connect(target, api_key=api_key, config=config)


__all__ = ["__version__", "connect"]
