"""The Iceberg catalog from settings, through PyIceberg (never hand-written metadata).

Default: a SQLite catalog (``<data_dir>/cold/catalog.db``) and a local warehouse (``<data_dir>/cold/warehouse``).
``cold.catalog_uri`` takes any SQLAlchemy URI (PostgreSQL for a shared catalog); ``cold.catalog = "rest"`` a REST
catalog; ``cold.warehouse = "s3://..."`` with ``cold.s3_*`` an S3 (or S3-compatible) warehouse. Secrets are
``SecretStr`` and only unwrapped here, into the catalog's properties.
"""

from __future__ import annotations

from pathlib import Path

from k2.cold.tables import NAMESPACE, TABLES
from k2.errors import ConfigError


def catalog_properties(settings) -> dict[str, str]:
    c = settings.cold
    cold_dir = Path(settings.data_dir).resolve() / "cold"
    props: dict[str, str] = {}
    if c.catalog == "sql":
        if c.catalog_uri:
            props["uri"] = c.catalog_uri
        else:
            cold_dir.mkdir(parents=True, exist_ok=True)
            props["uri"] = f"sqlite:///{cold_dir / 'catalog.db'}"
    else:
        if not c.catalog_uri:
            raise ConfigError("cold.catalog_uri", "a REST catalog needs its URL (K2_COLD__CATALOG_URI)")
        props["uri"] = c.catalog_uri
        if c.catalog_token is not None:
            props["token"] = c.catalog_token.get_secret_value()
    if c.warehouse:
        props["warehouse"] = c.warehouse
    elif c.catalog == "sql":
        (cold_dir / "warehouse").mkdir(parents=True, exist_ok=True)
        props["warehouse"] = f"file://{cold_dir / 'warehouse'}"
    if c.file_io == "fsspec":
        props["py-io-impl"] = "pyiceberg.io.fsspec.FsspecFileIO"
    if c.s3_endpoint:
        props["s3.endpoint"] = c.s3_endpoint
    if c.s3_region:
        props["s3.region"] = c.s3_region
    if c.s3_access_key_id is not None:
        props["s3.access-key-id"] = c.s3_access_key_id.get_secret_value()
    if c.s3_secret_access_key is not None:
        props["s3.secret-access-key"] = c.s3_secret_access_key.get_secret_value()
    return props


def open_catalog(settings):
    """The catalog, with namespace ``k2`` and every table created if missing (idempotent)."""
    props = catalog_properties(settings)
    if settings.cold.catalog == "sql":
        from pyiceberg.catalog.sql import SqlCatalog

        catalog = SqlCatalog("k2", **props)
    else:
        from pyiceberg.catalog.rest import RestCatalog

        catalog = RestCatalog("k2", **props)
    catalog.create_namespace_if_not_exists(NAMESPACE)
    for name, (schema, spec, sort, properties) in TABLES.items():
        # checked first: create_table_if_not_exists writes a metadata file before it finds the table exists,
        # leaving an orphan that engines listing metadata/ (ClickHouse's icebergLocal) could trip over
        if not catalog.table_exists(name):
            catalog.create_table_if_not_exists(name, schema, partition_spec=spec, sort_order=sort, properties=properties)
    return catalog
