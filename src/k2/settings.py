"""Typed settings: the only place the environment and the config file are read.

Precedence: command-line options > environment (``K2_*``, nested with ``__``) > config file > defaults.
The config file is ``--config PATH``, else ``$K2_CONFIG``, else ``./k2.toml`` when it exists. Unknown keys are
refused, and every error names the setting.

Example ``k2.toml``::

    data_dir = "/var/lib/k2"
    coinbase_advanced_side_is_maker = true

    [writer]
    max_rows = 500000

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from k2.errors import ConfigError
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
    max_rows: int = Field(500_000, ge=1, description="rows per insert before the writer flushes")
    max_delay_ms: int = Field(250, ge=1, le=60_000, description="oldest unflushed row, at most")
    store_raw: bool = Field(True, description="keep every frame in the raw layer")


class QuerySettings(_Frozen):
    timeout_s: float = Field(30.0, gt=0, le=3600)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="K2_", env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Path("./k2-data")
    coinbase_advanced_side_is_maker: bool = True
    instruments: tuple[InstrumentSpec, ...] = ()
    writer: WriterSettings = WriterSettings()
    query: QuerySettings = QuerySettings()

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        if str(v).strip() == "":
            raise ValueError("must not be empty")
        return v

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


__all__ = ["InstrumentSpec", "QuerySettings", "Settings", "WriterSettings", "load_settings"]
