"""deploy/: the Prometheus config and alert rules pass promtool (syntax and rule unit tests), every alert has a
`for`, a severity and an action and is unit-tested both ways, the Grafana dashboard is well formed, and every
`k2_` name these files use is exported by a real scrape of ``Metrics``."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import DEPLOY, need

PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "k2-dashboard.json"
K2_NAME = re.compile(r"\bk2_[a-zA-Z0-9_]*[a-zA-Z0-9]")
#: Grafana's variables, replaced by values Prometheus accepts (PromQL checks, and queries on a real server)
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "5m", "$instance": ".*",
                "$exchange": ".*"}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_exprs(dash: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every panel target."""
    dash = dash or dashboard()
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    for var, val in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, val)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


# -- promtool ------------------------------------------------------------------------------------------------
def test_promtool_check_config():
    res = run(need("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout + res.stderr  # alerts.yml is loaded by relative path


def test_promtool_check_rules():
    res = run(need("promtool"), "check", "rules", str(PROM / "alerts.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules():
    res = run(need("promtool"), "test", "rules", str(PROM / "alerts_test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every dashboard expression (as recording rules of a throwaway rule file)."""
    rules = [{"record": f"k2_dashboard_check:{i}", "expr": grafana_to_promql(expr)}
             for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = run(need("promtool"), "check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


# -- the files themselves ------------------------------------------------------------------------------------
def test_prometheus_config_scrapes_k2_and_loads_the_rules():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "k2"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


def test_every_alert_has_for_severity_and_action():
    rules = alert_rules()
    wanted = {"K2FeedDown", "K2FeedNoFrames", "K2FeedNoTrades", "K2FeedLagHigh", "K2GapsUnfilled",
              "K2DeadLettersRising", "K2OffloadBehind", "K2DiskAlmostFull", "K2DiskFilling"}
    assert wanted <= {r["alert"] for r in rules}
    for r in rules:
        assert re.fullmatch(r"\d+[smh]", str(r.get("for", ""))), f"{r['alert']}: no `for`"
        assert r.get("labels", {}).get("severity") in {"critical", "warning"}, r["alert"]
        ann = r.get("annotations", {})
        assert len(ann.get("summary", "")) > 10 and len(ann.get("action", "")) > 20, r["alert"]


def test_every_alert_is_unit_tested_firing_and_silent():
    names = {r["alert"] for r in alert_rules()}
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fires, silent = set(), set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert not names - fires, f"alerts never shown firing: {sorted(names - fires)}"
    assert not names - silent, f"alerts never shown silent: {sorted(names - silent)}"
    assert not (fires | silent) - names, f"tests of unknown alerts: {sorted((fires | silent) - names)}"


def test_dashboard_is_well_formed():
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids, problems = set(), []
    for p in panels(dash):
        if p["id"] in ids:
            problems.append(f"duplicate panel id {p['id']}")
        ids.add(p["id"])
        g = p["gridPos"]
        if not (0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0):
            problems.append(f"{p['title']}: gridPos {g}")
        if p["type"] == "row":
            continue
        if p.get("datasource") != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
            problems.append(f"{p['title']}: datasource {p.get('datasource')}")
        if not p.get("targets") or not all(t.get("expr") and t.get("refId") for t in p["targets"]):
            problems.append(f"{p['title']}: no query")
        for t in p.get("targets", []):
            if t.get("datasource", p["datasource"]) != p["datasource"]:
                problems.append(f"{p['title']}: target datasource {t['datasource']}")
    for v in dash["templating"]["list"]:
        if v["type"] == "query" and v["datasource"]["uid"] != "${DS_PROMETHEUS}":
            problems.append(f"variable {v['name']}: datasource {v['datasource']}")
    assert not problems, problems
    # what the dashboard must show
    used = {m for _, expr in dashboard_exprs(dash) for m in K2_NAME.findall(expr)}
    for topic in ("k2_feed_up", "k2_feed_lag_seconds", "k2_feed_trades_total", "k2_gaps_pending",
                  "k2_gaps_unfilled_total", "k2_feed_dead_letters_total", "k2_bus_depth_batches",
                  "k2_writer_trades_stored_total", "k2_offload_last_success_age_seconds", "k2_offload_behind_rows",
                  "k2_disk_free_bytes", "k2_api_request_duration_seconds_bucket"):
        assert topic in used, f"no panel shows {topic}"


# -- every name the deploy files use is exported ----------------------------------------------------------
def referenced_names() -> dict[str, set[str]]:
    """k2_ names per place: PromQL expressions (must be sample names) and prose (sample or family names)."""
    promql: set[str] = set()
    prose: set[str] = set()
    for r in alert_rules():
        promql |= set(K2_NAME.findall(r["expr"]))
        prose |= set(K2_NAME.findall(" ".join(r.get("annotations", {}).values())))
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    for test in tests["tests"]:
        for series in test.get("input_series", []):
            promql |= set(K2_NAME.findall(series["series"]))
    dash = dashboard()
    for _, expr in dashboard_exprs(dash):
        promql |= set(K2_NAME.findall(expr))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            promql |= set(K2_NAME.findall(v["definition"]))
    for p in panels(dash):
        prose |= set(K2_NAME.findall(p.get("description", "") + " " + p.get("title", "")))
    prose |= set(K2_NAME.findall((DEPLOY / "README.md").read_text()))
    return {"promql": promql, "prose": prose}


def exported(full) -> tuple[set[str], set[str]]:
    """(sample names, histogram names) of a full scrape. Sample names carry the suffixes PromQL selects:
    counters `_total`, histograms `_bucket`/`_sum`/`_count`. A counter's bare family name is neither."""
    body, _ = full.render()
    samples, histograms = set(), set()
    for fam in text_string_to_metric_families(body.decode()):
        if fam.samples:
            samples |= {s.name for s in fam.samples}
            if fam.type == "histogram":
                histograms.add(fam.name)
    return samples, histograms


def test_every_k2_name_in_alerts_dashboard_and_readme_is_exported(full):
    samples, histograms = exported(full)
    refs = referenced_names()
    assert len(refs["promql"]) > 40  # the scan found the expressions
    missing_promql = sorted(refs["promql"] - samples)
    # prose may name a histogram as well as one of its series
    missing_prose = sorted(refs["prose"] - samples - histograms)
    assert not missing_promql and not missing_prose, (
        f"used in PromQL but not exported: {missing_promql}; named in annotations/README but not exported: "
        f"{missing_prose}"
    )


def test_the_name_check_catches_wrong_suffixes(full):
    """The check above is only as good as its notion of a name: a counter without `_total`, a histogram
    without `_bucket`, or a gauge with `_total` must all count as missing."""
    samples, _ = exported(full)
    assert "k2_feed_trades_total" in samples and "k2_feed_trades" not in samples
    assert "k2_api_request_duration_seconds_bucket" in samples
    assert "k2_api_request_duration_seconds" not in samples
    assert "k2_feed_up" in samples and "k2_feed_up_total" not in samples

