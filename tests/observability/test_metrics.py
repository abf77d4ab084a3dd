"""k2.observability.Metrics: values read at scrape time from the real pipeline objects, API metrics, bounded
labels, a failing source never failing the scrape, and no default registry."""

from __future__ import annotations

import shutil
import time

import numpy as np
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from k2.cold.offload import OffloadResult
from k2.observability import METRICS, Metrics
from k2.observability.metrics import MAX_ROUTES

from .conftest import NOW, batch, build_platform, scrape, stop_writer, trades_table, us, value


def test_feed_metrics_are_read_from_feed_status_at_scrape_time(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers)
    m = Metrics(registry, platform=platform, clock=lambda: NOW, monotonic=lambda: platform.started + 120)
    st = platform.sessions["binance"].status
    st.state = "live"
    st.connects, st.connect_failures, st.rotations = 3, 1, 1
    st.disconnects = {"stale": 2, "closed": 1, "Not A Kind!": 4}
    st.frames, st.trades, st.dead_letters, st.control = 1000, 800, 2, 50
    st.messages_sent, st.exchange_errors, st.subscribe_failures, st.resubscribes = 7, 1, 5, 4
    st.rest_requests, st.rest_errors, st.rest_rate_limited, st.backfilled_trades = 12, 2, 1, 300
    st.last_frame_us, st.last_trade_us, st.lag_us = us(NOW - 3), us(NOW - 4.5), 250_000
    platform.sessions["kraken"].status.state = "backoff"
    platform.sessions["coinbase"].status.sequence_gaps = 9

    s = scrape(m)
    assert value(s, "k2_feed_up", exchange="binance") == 1
    assert value(s, "k2_feed_up", exchange="kraken") == 0
    assert value(s, "k2_feed_up", exchange="coinbase") == 0  # still "starting"
    for ex, current in (("binance", "live"), ("kraken", "backoff"), ("coinbase", "starting")):
        states = {dict(k)["state"]: v for k, v in s["k2_feed_state"].items() if dict(k)["exchange"] == ex}
        assert states == {st_: float(st_ == current) for st_ in
                          ("starting", "connecting", "subscribing", "live", "backoff", "stopped")}
    expected = {
        "k2_feed_connects_total": 3, "k2_feed_connect_failures_total": 1, "k2_feed_rotations_total": 1,
        "k2_feed_frames_total": 1000, "k2_feed_trades_total": 800, "k2_feed_dead_letters_total": 2,
        "k2_feed_control_frames_total": 50, "k2_feed_messages_sent_total": 7, "k2_feed_exchange_errors_total": 1,
        "k2_feed_subscribe_failures_total": 5, "k2_feed_resubscribes_total": 4, "k2_feed_sequence_gaps_total": 0,
        "k2_feed_rest_requests_total": 12, "k2_feed_rest_errors_total": 2, "k2_feed_rest_rate_limited_total": 1,
        "k2_feed_backfilled_trades_total": 300, "k2_feed_lag_seconds": 0.25,
    }
    for name, want in expected.items():
        assert value(s, name, exchange="binance") == want, name
    assert value(s, "k2_feed_sequence_gaps_total", exchange="coinbase") == 9
    # an unexpected reason text is folded into "other" (bounded labels)
    assert {dict(k)["reason"]: v for k, v in s["k2_feed_disconnects_total"].items()
            if dict(k)["exchange"] == "binance"} == {"stale": 2, "closed": 1, "other": 4}
    assert value(s, "k2_feed_last_frame_age_seconds", exchange="binance") == pytest.approx(3.0)
    assert value(s, "k2_feed_last_trade_age_seconds", exchange="binance") == pytest.approx(4.5)
    # nothing received yet: the age counts from the platform's start
    assert value(s, "k2_feed_last_frame_age_seconds", exchange="kraken") == pytest.approx(120)
    assert value(s, "k2_feed_last_trade_age_seconds", exchange="kraken") == pytest.approx(120)
    assert value(s, "k2_platform_uptime_seconds") == pytest.approx(120)

    st.trades += 5  # read live: the next scrape sees it
    st.state = "backoff"
    s = scrape(m)
    assert value(s, "k2_feed_trades_total", exchange="binance") == 805
    assert value(s, "k2_feed_up", exchange="binance") == 0
    assert value(s, "k2_feed_state", exchange="binance", state="backoff") == 1


def test_gap_metrics_follow_a_real_gap_tracker(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers, tracker_clock=lambda: us(NOW - 600))
    m = Metrics(registry, platform=platform, clock=lambda: NOW)
    tr = platform.trackers["binance"]
    tr.observe_live(trades_table("binance", "BTC-USDT", [1, 2, 3, 7, 8, 12]))  # gaps 4..6 and 9..11
    tr.observe_rest("BTC-USDT", np.array([4, 5, 6], dtype=np.uint64), np.array([us(NOW)] * 3), reconcile=False)
    [gap_9_11] = tr.open_gaps()
    tr.settle(gap_9_11, "REST history ends")
    tr.observe_live(trades_table("binance", "ETH-USDT", [10, 15]))  # gap 11..14
    tr.observe_rest("ETH-USDT", np.array([12], dtype=np.uint64), np.array([us(NOW)]), reconcile=False)

    s = scrape(m)
    assert value(s, "k2_gaps_detected_total", exchange="binance") == 3
    assert value(s, "k2_gaps_filled_total", exchange="binance") == 1
    assert value(s, "k2_gaps_unfilled_total", exchange="binance") == 1
    assert value(s, "k2_gaps_pending", exchange="binance") == 1
    assert value(s, "k2_gaps_pending_missing_trades", exchange="binance") == 3  # 11, 13, 14
    assert value(s, "k2_gaps_oldest_pending_age_seconds", exchange="binance") == pytest.approx(600)
    assert value(s, "k2_gaps_pending", exchange="kraken") == 0
    assert value(s, "k2_gaps_oldest_pending_age_seconds", exchange="kraken") == 0


def test_bus_depth_and_writer_down(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers)
    m = Metrics(registry, platform=platform)
    for _ in range(3):
        platform.bus.publish(batch())
    platform.bus.ack(platform.bus.consume(timeout=1))
    s = scrape(m)
    assert value(s, "k2_bus_depth_batches") == 2
    assert value(s, "k2_bus_capacity_batches") == 4096
    assert value(s, "k2_bus_published_batches_total") == 3
    assert value(s, "k2_bus_acked_batches_total") == 1
    assert value(s, "k2_writer_up") == 0  # never started


def test_writer_store_and_offload_metrics_through_the_real_writer(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers)
    m = Metrics(registry, platform=platform, store=store)
    writer = platform.writer.start()

    def publish_and_wait(trades, acked):
        platform.bus.publish(batch(trades, frames=trades.num_rows))
        deadline = time.monotonic() + 30
        while platform.bus.acked < acked and writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert platform.bus.acked == acked, writer.error

    try:
        publish_and_wait(trades_table("binance", "BTC-USDT", [1, 2, 3, 3, 4]), 1)  # 3 twice in one batch
        publish_and_wait(trades_table("binance", "BTC-USDT", [3, 4, 5]), 2)  # 3, 4 stored already
        s = scrape(m)
        assert value(s, "k2_writer_up") == 1
        assert value(s, "k2_writer_batches_total") == 2
        assert value(s, "k2_writer_inserts_total") == 2
        assert value(s, "k2_writer_frames_total") == 8
        assert value(s, "k2_writer_trades_in_total") == 8
        assert value(s, "k2_writer_trades_stored_total") == 5
        assert value(s, "k2_writer_duplicates_total") == 3
        assert value(s, "k2_store_rows", table="trades_store") == 5
        assert value(s, "k2_store_last_ingest_seq") == 5
        assert value(s, "k2_store_parts", table="trades_store") >= 1
        assert value(s, "k2_store_bytes", table="trades_store") > 0
        assert value(s, "k2_store_rows", table="ohlcv_1m_store") >= 1
        assert value(s, "k2_store_rows", table="dead_letters_store") == 0  # empty tables are 0, not missing
        assert "k2_offload_behind_rows" not in s  # no offload yet: the watermark is unknown

        # later scrapes read ingest_seq only above the last one seen: new rows still show
        publish_and_wait(trades_table("binance", "BTC-USDT", [6, 7]), 3)
        platform.offloads = 1
        platform.last_offload = OffloadResult(trades=3, raw_frames=0, trade_watermark=3, seconds=0.5, commits=1)
        s = scrape(m)
        assert value(s, "k2_store_last_ingest_seq") == 7
        assert value(s, "k2_store_rows", table="trades_store") == 7
        assert value(s, "k2_offload_watermark_ingest_seq") == 3
        assert value(s, "k2_offload_behind_rows") == 4
        assert value(scrape(m), "k2_store_last_ingest_seq") == 7  # nothing newer: unchanged
        assert value(s, "k2_offload_last_trades") == 3
        assert value(s, "k2_offload_last_duration_seconds") == 0.5
    finally:
        stop_writer(platform)
    assert value(scrape(m), "k2_writer_up") == 0


def test_offload_age_counts_from_start_then_from_the_last_cycle(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers, cold={"offload_interval_s": 60})
    mono = [platform.started + 100]
    m = Metrics(registry, platform=platform, monotonic=lambda: mono[0])
    s = scrape(m)
    assert value(s, "k2_offload_cycles_total") == 0
    assert value(s, "k2_offload_interval_seconds") == 60
    assert value(s, "k2_offload_last_success_age_seconds") == pytest.approx(100)
    assert "k2_offload_watermark_ingest_seq" not in s

    # a cycle ends (the platform records when); the age counts from there
    platform.offloads, platform.last_offload = 1, OffloadResult(trades=10, trade_watermark=10, seconds=1.0)
    platform.last_offload_at = mono[0] - 5
    assert value(scrape(m), "k2_offload_last_success_age_seconds") == pytest.approx(5)
    mono[0] += 40
    assert value(scrape(m), "k2_offload_last_success_age_seconds") == pytest.approx(45)
    platform.offload_errors = 3  # failures do not reset the age
    mono[0] += 20
    s = scrape(m)
    assert value(s, "k2_offload_last_success_age_seconds") == pytest.approx(65)
    assert value(s, "k2_offload_errors_total") == 3
    platform.offloads, platform.last_offload_at = 2, mono[0]
    s = scrape(m)
    assert value(s, "k2_offload_last_success_age_seconds") == 0
    assert value(s, "k2_offload_cycles_total") == 2


def test_a_failing_source_is_skipped_and_counted_never_raised(tmp_path, store, parsers, registry):
    platform = build_platform(tmp_path, store, parsers)
    m = Metrics(registry, platform=platform, store=store, data_dir=tmp_path)
    store.close()  # every query now fails
    platform.sessions["broken"] = object()  # a feed without a status
    for n in (1, 2):
        s = scrape(m)
        assert value(s, "k2_metrics_scrape_errors_total", source="store") == n
        assert value(s, "k2_metrics_scrape_errors_total", source="feeds") == n
        assert value(s, "k2_metrics_scrape_errors_total", source="gaps") == 0
        assert not [name for name in s if name.startswith(("k2_store_", "k2_feed_"))]  # whole families left out
        assert value(s, "k2_gaps_pending", exchange="binance") == 0  # the other sources are still there
        assert value(s, "k2_disk_total_bytes") > 0
        assert value(s, "k2_metrics_scrape_duration_seconds") >= 0


def test_serve_without_platform_exports_store_disk_and_api_only(tmp_path, store, registry):
    m = Metrics(registry, store=store, data_dir=tmp_path)
    m.sql_refused()
    s = scrape(m)
    assert not [n for n in s if n.startswith(("k2_feed_", "k2_gaps_", "k2_bus_", "k2_writer_", "k2_offload_",
                                              "k2_platform_"))]
    assert value(s, "k2_store_rows", table="trades_store") == 0
    assert value(s, "k2_store_last_ingest_seq") == 0
    assert value(s, "k2_api_sql_refused_total") == 1
    assert set(dict(k)["source"] for k in s["k2_metrics_scrape_errors_total"]) >= {"store", "disk"}


def test_attach_a_platform_built_after_the_metrics(tmp_path, store, parsers, registry):
    """`k2 up` builds the API (and its metrics) before the platform exists."""
    m = Metrics(registry)
    assert "k2_feed_up" not in scrape(m) and "k2_store_rows" not in scrape(m)
    platform = build_platform(tmp_path, store, parsers)
    platform.sessions["kraken"].status.state = "live"
    m.attach(platform)
    s = scrape(m)
    assert value(s, "k2_feed_up", exchange="kraken") == 1
    assert value(s, "k2_store_rows", table="trades_store") == 0  # the platform's store
    assert value(s, "k2_disk_total_bytes") > 0  # its data directory
    assert all(v == 0 for v in s["k2_metrics_scrape_errors_total"].values())


def test_disk_metrics_are_the_data_dir_filesystem(tmp_path, registry):
    m = Metrics(registry, data_dir=tmp_path / "not" / "created" / "yet")
    s = scrape(m)
    usage = shutil.disk_usage(tmp_path)
    assert value(s, "k2_disk_total_bytes") == usage.total
    assert value(s, "k2_disk_free_bytes") == pytest.approx(usage.free, abs=512 * 2**20)


def test_api_metrics(registry):
    m = Metrics(registry)
    m.observe_request("/v1/ohlcv/{timeframe}", "get", 200, 0.003)
    m.observe_request("/v1/ohlcv/{timeframe}", "GET", 200, 0.004)
    m.observe_request("/v1/trades", "GET", 500, 0.2)
    m.observe_request("/v1/trades", "BREW", 999, 0.01)
    for _ in range(3):
        m.rate_limited("/v1/trades")
    m.stream_clients_set(4)
    m.stream_messages(10)
    m.stream_messages(10)
    m.stream_dropped_clients()
    m.stream_dropped_clients(2)
    m.sql_refused()
    s = scrape(m)
    assert value(s, "k2_api_requests_total", route="/v1/ohlcv/{timeframe}", method="GET", status="200") == 2
    assert value(s, "k2_api_requests_total", route="/v1/trades", method="GET", status="500") == 1
    assert value(s, "k2_api_requests_total", route="/v1/trades", method="OTHER", status="other") == 1
    ohlcv = {"route": "/v1/ohlcv/{timeframe}", "method": "GET"}
    assert value(s, "k2_api_request_duration_seconds_bucket", le="0.0025", **ohlcv) == 0
    assert value(s, "k2_api_request_duration_seconds_bucket", le="0.005", **ohlcv) == 2
    assert value(s, "k2_api_request_duration_seconds_bucket", le="+Inf", **ohlcv) == 2
    assert value(s, "k2_api_request_duration_seconds_count", **ohlcv) == 2
    assert value(s, "k2_api_request_duration_seconds_sum", **ohlcv) == pytest.approx(0.007)
    assert value(s, "k2_api_request_duration_seconds_bucket", le="0.25", route="/v1/trades", method="GET") == 1
    assert value(s, "k2_api_rate_limited_total", route="/v1/trades") == 3
    assert value(s, "k2_api_stream_clients") == 4
    assert value(s, "k2_api_stream_messages_total") == 20
    assert value(s, "k2_api_stream_dropped_clients_total") == 3
    assert value(s, "k2_api_sql_refused_total") == 1
    m.stream_clients_set(1)
    assert value(scrape(m), "k2_api_stream_clients") == 1


def test_route_labels_are_bounded(registry):
    m = Metrics(registry)
    for i in range(MAX_ROUTES + 6):  # a caller passing raw paths instead of route templates
        m.observe_request(f"/v1/trades/{i}", "GET", 200, 0.001)
    routes = {dict(k)["route"]: v for k, v in scrape(m)["k2_api_requests_total"].items()}
    assert len(routes) == MAX_ROUTES + 1
    assert routes["other"] == 6


def test_no_default_registry_and_one_metrics_per_registry(tmp_path, store):
    def default_names() -> set[str]:
        return {f.name for f in prometheus_client.REGISTRY.collect()}

    before = default_names()
    a, b = CollectorRegistry(), CollectorRegistry()
    ma, mb = Metrics(a, store=store), Metrics(b)
    ma.sql_refused()
    assert default_names() == before
    assert not [n for n in default_names() if n.startswith("k2_")]
    assert value(scrape(ma), "k2_api_sql_refused_total") == 1
    assert value(scrape(mb), "k2_api_sql_refused_total") == 0
    assert "k2_store_rows" not in scrape(mb)
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(a)  # the same names twice on one registry are refused, not silently merged


def test_every_documented_metric_is_exported_with_its_type_and_labels(full):
    body, _ = full.render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    problems = []
    for spec in METRICS:
        base = spec.name[: -len("_total")] if spec.kind == "counter" else spec.name
        fam = families.get(base)
        if fam is None or not fam.samples:
            problems.append(f"{spec.name}: not exported")
            continue
        if fam.type != spec.kind:
            problems.append(f"{spec.name}: type {fam.type}, documented {spec.kind}")
        for sample in fam.samples:
            labels = set(sample.labels) - {"le"}
            if labels != set(spec.labels):
                problems.append(f"{spec.name}: labels {sorted(labels)}, documented {sorted(spec.labels)}")
                break
    documented = {s.name[: -len("_total")] if s.kind == "counter" else s.name for s in METRICS}
    # prometheus_client adds a `<name>_created` gauge (creation time) to its own counters and histograms
    undocumented = sorted(n for n in families if n.startswith("k2_") and n not in documented
                          and not (n.endswith("_created") and n[: -len("_created")] in documented))
    assert not problems and not undocumented, (problems, undocumented)


def test_full_scrape_values(full):
    s = scrape(full)
    assert value(s, "k2_feed_up", exchange="kraken") == 1
    assert value(s, "k2_gaps_pending", exchange="binance") == 1
    assert value(s, "k2_gaps_oldest_pending_age_seconds", exchange="binance") == pytest.approx(30)
    assert value(s, "k2_store_last_ingest_seq") == 3
    assert value(s, "k2_offload_behind_rows") == 1
    assert all(v == 0 for v in s["k2_metrics_scrape_errors_total"].values())
