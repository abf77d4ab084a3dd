"""Typed settings: the only place the environment and the config file are read.

Precedence: command-line options > environment (``K2_*``, nested with ``__``) > config file > defaults.
The config file is ``--config PATH``, else ``$K2_CONFIG``, else ``./k2.toml`` when it exists. Unknown keys are
refused, and every error names the setting.

Example ``k2.toml``::

    data_dir = "/var/lib/k2"
    coinbase_advanced_side_is_maker = true

    exchanges = ["binance", "kraken"]        # feeds `k2 up` runs
    coinbase_feed = "exchange"               # or "advanced" (Advanced Trade market_trades)
    binance_ws_url = "wss://data-stream.binance.vision"   # every endpoint: K2_<EXCHANGE>_WS_URL / _REST_URL

    [writer]
    max_rows = 1200000

    [feeds]
    backoff_max_s = 60

    [[instruments]]          # extra pairs, no code change needed
    exchange = "binance"
    native_symbol = "PEPEUSDT"
    base = "PEPE"
    quote = "USDT"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from k2.errors import ConfigError
from k2.hot.writer import DEFAULT_MAX_ROWS
from k2.model.instrument import Instrument, InstrumentTable


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InstrumentSpec(_Frozen):
    exchange: Literal["binance", "kraken", "coinbase"]
    native_symbol: str = Field(min_length=1)
    base: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    rest_symbol: str | None = None


class WriterSettings(_Frozen):
    max_rows: int = Field(
        DEFAULT_MAX_ROWS, ge=1, description="rows (trades and raw frames) per insert at most; live feeds flush by max_delay_ms"
    )
    max_delay_ms: int = Field(250, ge=1, le=60_000, description="oldest unflushed row, at most")
    store_raw: bool = Field(True, description="keep every frame in the raw layer")


class QuerySettings(_Frozen):
    timeout_s: float = Field(30.0, gt=0, le=3600)


class FeedSettings(_Frozen):
    """Timings and limits of the live feeds (`[feeds]` in the config file, ``K2_FEEDS__*`` in the environment).

    Defaults follow the exchanges' documented limits (``exchanges.md``); tests shrink the timings.
    """

    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="first reconnect delay cap (full jitter)")
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="reconnect delay cap")
    backoff_reset_s: float = Field(30.0, ge=0, description="a connection healthy this long resets the backoff")
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    ack_timeout_s: float = Field(10.0, gt=0, le=300, description="every subscription must be acknowledged within this")
    binance_stale_s: float = Field(60.0, gt=0, description="Binance: reconnect after this long without any frame or ping")
    kraken_stale_s: float = Field(5.0, gt=0, description="Kraken: heartbeats come every second; reconnect after this silence")
    coinbase_stale_s: float = Field(5.0, gt=0, description="Coinbase: heartbeats come every second; reconnect after this silence")
    symbol_stale_s: float = Field(600.0, gt=0, description="one stream without a trade this long is resubscribed and reconciled")
    binance_rotate_s: float = Field(23.5 * 3600, gt=0, description="planned overlapping reconnect before Binance's 24 h limit")
    binance_msgs_per_s: float = Field(
        3.0, gt=0, le=3, description="our messages per second on a Binance connection (its 5/s limit counts pongs too)"
    )
    kraken_msgs_per_s: float = Field(5.0, gt=0, le=50)
    coinbase_msgs_per_s: float = Field(4.0, gt=0, le=8, description="8 unauthenticated messages/s per IP")
    kraken_ping_s: float = Field(30.0, gt=0, description="application-level ping period on Kraken")
    flush_ms: int = Field(100, ge=1, le=10_000, description="received frames are parsed and published in batches this old at most")
    binance_rest_weight_per_min: int = Field(3000, ge=25, le=6000, description="half the 6000/min IP budget by default")
    kraken_rest_per_s: float = Field(1.0, gt=0, le=20)
    coinbase_rest_per_s: float = Field(5.0, gt=0, le=10)
    rest_timeout_s: float = Field(10.0, gt=0, le=120)
    rest_attempts: int = Field(6, ge=1, le=50, description="tries per REST page before a gap is given up")
    backfill_max_trades: int = Field(500_000, ge=1, description="trades fetched for one gap at most; the rest stays unfilled")
    reconcile_settle_s: float = Field(1.0, ge=0, description="after a (re)connect, wait this long before asking REST about quiet streams")
    status_interval_s: float = Field(10.0, gt=0, description="how often `k2 up` logs a status line")

    @model_validator(mode="after")
    def _backoff(self) -> "FeedSettings":
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class ColdSettings(_Frozen):
    """The Iceberg cold tier (`[cold]`, ``K2_COLD__*``). Defaults: a SQLite catalog and a local warehouse under
    ``<data_dir>/cold``. A SQL catalog URI (``postgresql+psycopg2://...``), a REST catalog and an S3 warehouse
    are settings, nothing else."""

    catalog: Literal["sql", "rest"] = "sql"
    catalog_uri: str | None = Field(None, description="SQLAlchemy URI (sql) or base URL (rest); default SQLite in the data dir")
    catalog_token: SecretStr | None = Field(None, description="REST catalog bearer token")
    warehouse: str | None = Field(None, description="file:///... or s3://bucket/prefix; default <data_dir>/cold/warehouse")
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    file_io: Literal["pyarrow", "fsspec"] = Field(
        "pyarrow", description="PyIceberg's FileIO; fsspec (s3fs) suits S3-compatible stores Arrow's client trips on"
    )
    offload_interval_s: float = Field(900.0, gt=0, description="`k2 up` offloads this often")
    offload_batch_rows: int = Field(1_000_000, ge=1_000, description="trades per Iceberg commit at most")
    candle_close_grace_s: float = Field(60.0, ge=0, description="a bucket is closed this long after its end")
    hot_retention_days: float = Field(7.0, gt=0, description="hot trades older than this are dropped once cold holds them")
    hot_candle_retention_days: float = Field(400.0, gt=0, description="hot candles are kept this long")
    snapshot_retention_days: float = Field(7.0, gt=0, description="`k2 maintain` expires older snapshots")
    maintain_interval_s: float = Field(86_400.0, gt=0, description="`k2 up` runs maintenance this often")


class ApiSettings(_Frozen):
    """The HTTP API (`[api]`, ``K2_API__*``), served by `k2 up` and `k2 serve`. See docs/api.md."""

    enabled: bool = Field(True, description="`k2 up` serves the API (and the dashboard and /metrics)")
    host: str = Field("127.0.0.1", min_length=1, description="listen address; 0.0.0.0 exposes it to the network")
    port: int = Field(8000, ge=0, le=65535, description="listen port (0: any free port)")
    api_keys: tuple[SecretStr, ...] = Field((), description="when set, every route but /health needs one of these keys")
    rate_limit_per_s: float = Field(0.0, ge=0, description="requests per second per key (per client address without keys); 0 = off")
    rate_limit_burst: int = Field(100, ge=1, description="requests a key may make at once before the rate applies")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed by CORS ('*' for any)")
    max_json_rows: int = Field(100_000, ge=1, description="rows one JSON answer may hold; bulk formats stream more")
    max_bulk_rows: int = Field(50_000_000, ge=1, description="rows one CSV/Arrow/Parquet download may hold")
    sql_max_rows: int = Field(100_000, ge=1, description="POST /v1/sql: rows returned at most (a request may ask fewer)")
    sql_timeout_s: float = Field(10.0, gt=0, le=3600, description="POST /v1/sql: time limit of one query")
    query_threads: int = Field(4, ge=1, le=64, description="store queries run at once; more wait")
    cache_entries: int = Field(2048, ge=0, description="answers kept until a write touches their pair (0 = off)")
    serve_previous_while_refreshing: bool = Field(
        True, description="while an answer is brought up to date, others asking get the previous one (tens of ms old) at once"
    )
    stream_queue: int = Field(1000, ge=10, description="messages a stream client may fall behind before it is dropped")

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for k in v:
            if len(k.get_secret_value()) < 16:
                raise ValueError("every API key must be at least 16 characters long")
        return v


#: Live endpoints (exchanges.md §0). Coinbase: the Exchange `matches` feed unless ``coinbase_feed = "advanced"``.
DEFAULT_WS_URLS = {
    "binance": "wss://data-stream.binance.vision",
    "kraken": "wss://ws.kraken.com/v2",
    "coinbase": "wss://ws-feed.exchange.coinbase.com",
    "coinbase-advanced": "wss://advanced-trade-ws.coinbase.com",
}
DEFAULT_REST_URLS = {
    # historicalTrades is not served by data-api.binance.vision (exchanges.md §1.7)
    "binance": "https://api.binance.com",
    "kraken": "https://api.kraken.com",
    # id-cursor backfill for both Coinbase feeds: the Exchange REST API (same trade ids, exchanges.md §3.5)
    "coinbase": "https://api.exchange.coinbase.com",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="K2_", env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Path("./k2-data")
    coinbase_advanced_side_is_maker: bool = True
    instruments: tuple[InstrumentSpec, ...] = ()
    writer: WriterSettings = WriterSettings()
    query: QuerySettings = QuerySettings()
    feeds: FeedSettings = FeedSettings()
    cold: ColdSettings = ColdSettings()
    api: ApiSettings = ApiSettings()

    #: feeds `k2 up` runs (``--exchanges binance,kraken``; env ``K2_EXCHANGES='["binance"]'``)
    exchanges: tuple[Literal["binance", "kraken", "coinbase"], ...] = ("binance", "kraken", "coinbase")
    coinbase_feed: Literal["exchange", "advanced"] = "exchange"
    binance_ws_url: str | None = None
    kraken_ws_url: str | None = None
    coinbase_ws_url: str | None = None
    binance_rest_url: str | None = None
    kraken_rest_url: str | None = None
    coinbase_rest_url: str | None = None

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        if str(v).strip() == "":
            raise ValueError("must not be empty")
        return v.expanduser().absolute()  # fixed at start-up: the working directory may change later

    @field_validator(
        "binance_ws_url", "kraken_ws_url", "coinbase_ws_url", "binance_rest_url", "kraken_rest_url", "coinbase_rest_url"
    )
    @classmethod
    def _url(cls, v: str | None, info) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        wanted = ("ws", "wss") if info.field_name.endswith("_ws_url") else ("http", "https")
        if scheme not in wanted or len(v) <= len(scheme) + 3:
            raise ValueError(f"must be a {' or '.join(w + '://' for w in wanted)} URL")
        return v

    @field_validator("exchanges")
    @classmethod
    def _exchanges(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("must name at least one exchange")
        return tuple(dict.fromkeys(v))

    def ws_url(self, exchange: str) -> str:
        """The WebSocket endpoint of ``exchange`` (override, else the live default)."""
        url = getattr(self, f"{exchange}_ws_url")
        if url:
            return url
        if exchange == "coinbase" and self.coinbase_feed == "advanced":
            return DEFAULT_WS_URLS["coinbase-advanced"]
        return DEFAULT_WS_URLS[exchange]

    def with_api(self, **changes: Any) -> "Settings":
        """A copy with ``api`` settings changed (command-line options), validated like the rest."""
        try:
            api = ApiSettings(**{**self.api.model_dump(), **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = "api." + ".".join(str(p) for p in err["loc"])
            raise ConfigError(loc, f"{err['msg']} (input {err.get('input')!r})") from None
        return self.model_copy(update={"api": api})

    def rest_url(self, exchange: str) -> str:
        return getattr(self, f"{exchange}_rest_url") or DEFAULT_REST_URLS[exchange]

    #: the config file's contents; bound per load by :func:`load_settings` (no module state)
    _file_data: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls, cls._file_data))

    def instrument_table(self) -> InstrumentTable:
        extra = []
        for n, spec in enumerate(self.instruments):
            try:
                extra.append(Instrument.make(spec.exchange, spec.native_symbol, spec.base, spec.quote, spec.rest_symbol))
            except ValueError as exc:
                raise ConfigError(f"instruments[{n}]", str(exc)) from None
        return InstrumentTable.default(extra)


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - not used, __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings once at the entry point. Raises :class:`ConfigError` naming the bad setting."""
    path = config or os.environ.get("K2_CONFIG")
    if path:
        data = _read_config(Path(path))
    elif Path("k2.toml").exists():
        data = _read_config(Path("k2.toml"))
    else:
        data = {}
    bound = type("Settings", (Settings,), {"_file_data": data, "__module__": __name__})
    try:
        settings = bound(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        env = "K2_" + "__".join(str(p) for p in err["loc"] if not isinstance(p, int)).upper()
        raise ConfigError(loc, f"{err['msg']} (input {err.get('input')!r}; set it in the config file or {env})") from None
    settings.instrument_table()  # validate extra instruments now, at start-up
    return settings


__all__ = ["ApiSettings", "ColdSettings", "FeedSettings", "InstrumentSpec", "QuerySettings", "Settings", "WriterSettings", "load_settings"]
