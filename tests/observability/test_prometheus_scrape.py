"""A real Prometheus scrapes K2's metrics with deploy/prometheus/prometheus.yml (only the target and the
intervals changed): the target is up, K2 samples are stored, every alert rule evaluates without error and every
Grafana panel query returns data.

The endpoint serves ``Metrics.render()`` from a small ``http.server`` thread. A second variant against the real
API app can reuse ``prometheus_against``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from .conftest import DEPLOY, need
from .test_deploy_files import alert_rules, dashboard, dashboard_exprs, grafana_to_promql

DEADLINE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_metrics(render: Callable[[], tuple[bytes, str]]) -> Iterator[str]:
    """``render`` on http://127.0.0.1:<port>/metrics; yields "127.0.0.1:<port>"."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body, ctype = render()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class PromAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # still starting: a plain-text "Service Unavailable", so not yet an answer
                return {}
            return json.loads(exc.read() or b"{}")  # a bad query answers 400 with a JSON error

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)


@contextlib.contextmanager
def prometheus_against(target: str, workdir: Path) -> Iterator[tuple[PromAPI, subprocess.Popen]]:
    """The real ``prometheus`` with deploy/prometheus/prometheus.yml pointed at ``target``, scraping every second."""
    binary = need("prometheus")
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "k2"]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_timeout"] = "1s"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    for rule_file in cfg["rule_files"]:  # relative to the config, as in deploy/
        shutil.copy(DEPLOY / "prometheus" / rule_file, workdir / rule_file)
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield PromAPI(f"http://127.0.0.1:{port}"), proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def wait_until(cond: Callable[[], object], what: str, proc: subprocess.Popen, log: Path, deadline: float):
    while True:
        try:
            got = cond()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({proc.returncode}) waiting for {what}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; prometheus log: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def test_real_prometheus_scrapes_k2_evaluates_the_alerts_and_answers_every_dashboard_query(full, tmp_path):
    deadline = time.monotonic() + DEADLINE_S
    log = tmp_path / "prom" / "prometheus.log"
    with serve_metrics(full.render) as target, prometheus_against(target, tmp_path / "prom") as (api, proc):

        def k2_up():
            res = api.query('up{job="k2"}')
            return res.get("status") == "success" and [r for r in res["data"]["result"] if r["value"][1] == "1"]

        [up] = wait_until(k2_up, 'up{job="k2"} == 1', proc, log, deadline)
        assert up["metric"]["instance"] == target

        def has(expr):
            return lambda: api.query(expr).get("data", {}).get("result")

        feeds = wait_until(has('k2_feed_up{job="k2"}'), "a k2_feed_up sample", proc, log, deadline)
        assert {r["metric"]["exchange"]: r["value"][1] for r in feeds} == {"binance": "1", "kraken": "1", "coinbase": "1"}
        [stored] = wait_until(has('k2_store_rows{table="trades_store"}'), "k2_store_rows", proc, log, deadline)
        assert stored["value"][1] == "3"

        # every alert rule loaded from alerts.yml (relative path) and evaluated without error
        names = {r["alert"] for r in alert_rules()}

        def rules_ok():
            groups = api.get("/api/v1/rules")["data"]["groups"]
            rules = {r["name"]: r for g in groups for r in g["rules"]}
            return set(rules) == names and all(r["health"] == "ok" for r in rules.values()) and rules

        rules = wait_until(rules_ok, "every alert rule evaluated ok", proc, log, deadline)
        assert {r.get("lastError") for r in rules.values()} <= {"", None}

        # every dashboard query (variables substituted) runs and returns data; rate() needs two scrapes
        exprs = [(title, grafana_to_promql(e)) for title, e in dashboard_exprs()]
        exprs += [(f"variable {v['name']}", grafana_to_promql(v["definition"].split("(", 1)[1].rsplit(",", 1)[0]))
                  for v in dashboard()["templating"]["list"] if v["type"] == "query"]

        def failing():
            bad = []
            for title, expr in exprs:
                res = api.query(expr)
                if res.get("status") != "success":
                    bad.append((title, expr, res.get("error")))
                elif not res["data"]["result"]:
                    bad.append((title, expr, "no data"))
            return bad

        bad = failing()
        while bad and time.monotonic() < deadline:
            time.sleep(0.5)
            bad = failing()
        assert not bad, "dashboard queries without data:\n" + "\n".join(map(str, bad))
