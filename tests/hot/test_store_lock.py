"""A data directory another process holds (chdb: one process per store) fails with a message saying what to do."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from k2.errors import StoreError
from k2.hot.chdb_store import ChdbStore


def test_a_store_held_by_another_process_is_refused_with_a_clear_message(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from k2.hot.chdb_store import ChdbStore; "
         f"s = ChdbStore({str(tmp_path)!r}); print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="in use by another process .* through its API"):
            ChdbStore(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    with ChdbStore(tmp_path) as store:  # free again once the holder is gone
        assert store.query_arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]
