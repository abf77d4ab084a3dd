"""Read paths: the read-only SQL surface (and, with the cold tier, queries that span hot and cold)."""
