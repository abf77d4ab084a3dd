"""Hot tier: ClickHouse (embedded through chdb by default)."""
