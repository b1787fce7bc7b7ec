"""The Grafana dashboard and the Prometheus alert rules parse, have what Grafana and
Prometheus require, and query only metrics core/metrics/counters.py defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from core.metrics import counters as metrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "whatsapp.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        if not match.group(2) and match.group(1) not in _KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names('histogram_quantile(0.95, sum by (le, stage) (rate(x_bucket{a="b"}[$__rate_interval])))') == {
        "x_bucket"
    }
    assert metric_names("max by (circuit) (circuit_breaker_state) == 2") == {"circuit_breaker_state"}
    assert metric_names("sum(a_total) / on (job) group_left b_total > bool 1") == {"a_total", "b_total"}


def test_dashboard_queries_defined_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dashboard["templating"]["list"])
    defined = metrics.sample_names()
    queried: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(panel), panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= defined, (panel["title"], target["expr"], names - defined)
            queried[panel["title"]] = queried.get(panel["title"], set()) | names
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = set().union(*queried.values())
    # What the issue asks the dashboard to show.
    assert {
        "whatsapp_messages_received_total",
        "pipeline_duration_seconds_bucket",
        "message_dlq_total",
        "dlq_open_entries",
        "circuit_breaker_state",
        "kafka_consumer_lag",
        "celery_queue_length",
    } <= used
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("histogram_quantile(0.99" in e and "pipeline_duration_seconds_bucket" in e for e in exprs)
    assert any("by (stage, reason)" in e and "message_dlq_total" in e for e in exprs)


def test_alert_rules_have_the_required_keys_and_query_defined_metrics():
    rules = yaml.safe_load(ALERTS.read_text())
    defined = metrics.sample_names()
    alerts = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
            names = metric_names(rule["expr"])
            assert names and names <= defined, (rule["alert"], names - defined)
            alerts[rule["alert"]] = rule
    assert len(alerts) == sum(len(g["rules"]) for g in rules["groups"])
    # DLQ growth, a breaker open more than 5 minutes, consumer lag, stuck inbox rows.
    assert "message_dlq_total" in alerts["DeadLettersGrowing"]["expr"]
    breaker = alerts["CircuitBreakerOpen"]
    assert "circuit_breaker_state" in breaker["expr"] and "== 2" in breaker["expr"] and breaker["for"] == "5m"
    assert "kafka_consumer_lag" in alerts["KafkaConsumerLagHigh"]["expr"]
    assert "inbox_stuck_messages" in alerts["InboxMessagesStuck"]["expr"]
