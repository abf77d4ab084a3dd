"""One error tree for K2.

    K2Error
     +-- ConfigError            bad settings; fatal at start-up, names the setting
     +-- DataError              bad input data (a frame, a capture line); never fatal to a run
     |    +-- CaptureError      a capture file that cannot be opened or decoded at all
     +-- StoreError             the hot store failed
     |    +-- RetryableStoreError   transient (timeouts, busy); safe to retry the same batch
     +-- QueryRefused           a query the read-only SQL surface will not run (bad request, 4xx)
     +-- QueryFailed            the engine rejected or failed a read-only query
     +-- BadRequest             an API/client request that cannot be answered as asked (4xx); says what to change

Third-party exceptions are translated at the adapter that calls the library (see ``hot/chdb_store.py``).
"""

from __future__ import annotations


class K2Error(Exception):
    """Base of every error K2 raises on purpose."""

    retryable: bool = False


class ConfigError(K2Error):
    """A setting is missing or invalid. The message names the setting."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"invalid setting {setting!r}: {message}")


class DataError(K2Error):
    """Input data could not be used."""


class CaptureError(DataError):
    """A capture file cannot be read at all (missing, unknown compression, corrupt stream)."""


class StoreError(K2Error):
    """The hot store failed."""


class RetryableStoreError(StoreError):
    retryable = True


class QueryRefused(K2Error):
    """The read-only SQL surface refuses this statement (writes, DDL, files, network, settings)."""


class QueryFailed(K2Error):
    """The engine could not run a read-only query (syntax error, unknown column, timeout...)."""


class BadRequest(K2Error):
    """A request the query layer cannot answer as asked; the message says what to change (HTTP 400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)
