"""The Iceberg cold tier: catalog from settings, table specs, exactly-once offload."""
