from __future__ import annotations

from pathlib import Path

import pytest

from k2.hot.chdb_store import ChdbStore
from k2.model import InstrumentTable
from k2.venues.registry import make_parsers

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def instruments() -> InstrumentTable:
    return InstrumentTable.default()


@pytest.fixture(scope="session")
def parsers(instruments):
    return make_parsers(instruments)


@pytest.fixture
def store(tmp_path):
    s = ChdbStore(tmp_path / "data")
    yield s
    s.close()
