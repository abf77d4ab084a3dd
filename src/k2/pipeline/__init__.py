"""Wiring: parsers -> bus -> hot writer -> store."""
