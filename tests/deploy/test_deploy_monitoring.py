"""Monitoring in the prod overlay: every pod is scraped once, and the alert rules and the
Grafana dashboard name only metrics the services export; every alert has a runbook entry.

The metric names in PromQL come from a small tokenizer (no promtool): strings, label
matchers, ranges and grouping clauses are removed, then every identifier that is not a
function, an aggregation or a keyword is a metric name.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import prometheus_client
import pytest
import yaml  # type: ignore[import-untyped]

from assaylib.config import env_var
from tests.deploy.conftest import (
    PROMETHEUS_RULES,
    ROOT,
    SERVICES,
    TREES,
    Manifest,
    alert_rules,
    containers,
    of_kind,
    pod_labels,
)

RUNBOOK = ROOT / "docs" / "operations.md"
PROD = TREES["prod"]
DASHBOARD = PROD / "grafana" / "assay-dashboard.json"
MONITORING_API = "monitoring.coreos.com/v1"
METRICS_PORT = 9090

METRIC_MODULES = (
    "archive_svc.metrics",
    "assaylib.telemetry",
    "assaylib.batching",
    "assessment_svc.submissions",
    "worker.metrics",
    "worker.consumer",
    "notifier.watch",
    "notifier.hub",
    "notifier.events_source",
)
"""The modules that define the services' metrics (imported, then read from the registry)."""

EXTERNAL_METRICS = frozenset({"up", "kube_cronjob_status_last_successful_time"})
"""Series the rules may use that Assay does not export: Prometheus's own `up`, and
kube-state-metrics. Add a name here only with the exporter that provides it."""

REQUIRED_ALERTS = frozenset(
    {
        "AssayOutboxBacklogOld",
        "AssayOutboxBacklog",
        "AssayOutboxRelayFailing",
        "AssayConsumerBacklogGrowing",
        "AssayStuckJobsSwept",
        "AssaySweepHeldBack",
        "AssaySweepFailingManyJobs",
        "AssaySweepNotRunning",
        "AssayRefundSpike",
        "AssayNoLiveWorkers",
        "AssayNotifierOverflows",
        "AssayDependencyUnavailable",
        "AssayWorkersSaturated",
        "AssayHeartbeatsFailing",
    }
)
SEVERITIES = frozenset({"page", "warning"})

# ---- a PromQL tokenizer ------------------------------------------------------------------

# fmt: off
FUNCTIONS = frozenset([
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "end", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "start", "stddev_over_time", "stdvar_over_time", "sum_over_time",
    "tan", "tanh", "time", "timestamp", "vector", "year",
])
AGGREGATIONS = frozenset([
    "avg", "bottomk", "count", "count_values", "group", "limit_ratio", "limitk", "max", "min",
    "quantile", "stddev", "stdvar", "sum", "topk",
])
KEYWORDS = frozenset([
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan",
])
# fmt: on

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")


class PromQLError(ValueError):
    """An expression the tokenizer cannot account for (an unknown function, `__name__`)."""


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    if "__name__" in expr:
        raise PromQLError(f"name metrics by identifier, not __name__: {expr}")
    text = _COMMENT.sub(" ", _STRING.sub('""', expr))
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call:
            if word not in FUNCTIONS | AGGREGATIONS:
                raise PromQLError(f"unknown function {word}() in {expr}")
        elif word.lower() not in KEYWORDS:
            names.add(word)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(a_total[5m]))", {"a_total"}),
        ('max by (status) (b{status="QUEUED", x=~"y|z"}) > 0', {"b"}),
        ("histogram_quantile(0.99, sum by (le) (rate(c_bucket[$__rate_interval])))", {"c_bucket"}),
        ("d / on(job) group_left(pod) e offset 5m and f @ start()", {"d", "e", "f"}),
        ("absent(up{job='w'}) or sum without (pod) (g) == bool 1e3", {"up", "g"}),
        ('label_replace(h, "dst", "$1", "src", "(.*)") # comment naming not_a_metric', {"h"}),
        ("max_over_time(k[1h:5m]) > Inf", {"k"}),
    ],
)
def test_the_tokenizer_finds_metric_names(expr, names):
    assert metric_names(expr) == names


def test_the_tokenizer_refuses_what_it_cannot_read():
    with pytest.raises(PromQLError, match="unknown function"):
        metric_names("sum(rat(assay_outbox_published_total[5m]))")
    with pytest.raises(PromQLError, match="__name__"):
        metric_names('{__name__="assay_jobs"}')


# ---- what the services export ------------------------------------------------------------

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


@cache
def exported_families() -> dict[str, str]:
    """Every assay_* metric family the service modules register: name → type."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    return {
        family.name: family.type
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("assay_")
    }


def exported_series() -> set[str]:
    """Every series name a scrape of the services can return (counter `_total`, histogram
    `_bucket`/`_sum`/`_count`, …), plus the allowed external ones."""
    return {
        name + suffix
        for name, kind in exported_families().items()
        for suffix in SAMPLE_SUFFIXES[kind]
    } | EXTERNAL_METRICS


def scraped_name(name: str, kind: str) -> str:
    """How the docs name a family: a counter with its `_total`, an info with its `_info`,
    anything else as defined."""
    suffix = {"counter": "_total", "info": "_info"}.get(kind, "")
    return f"{name}{suffix}"


def test_the_registry_holds_every_service_metric():
    families = exported_families()
    assert families["assay_outbox_unsent"] == "gauge"
    assert families["assay_job_transitions"] == "counter"
    assert families["assay_notifier_event_delivery_seconds"] == "histogram"
    assert "assay_job_transitions_total" in exported_series()
    assert "assay_job_transitions" not in exported_series()  # a counter is scraped as _total


def test_the_tokenizer_catches_a_metric_the_services_do_not_export():
    typo = "sum(rate(assay_outbox_publishd_total[5m]))"
    assert metric_names(typo) - exported_series() == {"assay_outbox_publishd_total"}


# ---- the alert rules -----------------------------------------------------------------------


def _rule_document() -> Manifest:
    return dict(yaml.safe_load(PROMETHEUS_RULES.read_text()))


def test_the_rules_file_is_a_prometheus_rule():
    document = _rule_document()
    assert document["apiVersion"] == MONITORING_API
    assert document["kind"] == "PrometheusRule"
    for group in document["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        for rule in group["rules"]:
            allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert set(rule) <= allowed, rule
            if "for" in rule:
                assert re.fullmatch(r"(\d+[smhd])+", rule["for"]), rule["alert"]


def test_every_alert_is_labelled_and_annotated():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    assert set(names) >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_names_exported_metrics(rule):
    names = metric_names(rule["expr"])
    assert names, f"{rule['alert']}: no metric found: the tokenizer misread the expression"
    unknown = names - exported_series()
    assert not unknown, f"{rule['alert']}: not exported by any service: {sorted(unknown)}"


def github_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub, GitLab) gives the headings, code skipped."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = re.match(r"#{1,6} +(.+?) *#* *$", line)
        if in_code or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_the_anchor_reader_skips_code_and_numbers_repeats():
    text = "# Top\n```sh\n# not a heading\n```\n## The `sweep` (now)\n### Top\n"
    assert github_anchors(text) == {"top", "the-sweep-now", "top-1"}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_runbook_url_points_at_its_entry_in_the_runbook(rule):
    url = urlsplit(rule["annotations"]["runbook_url"])
    assert url.scheme == "https" and url.path.endswith("/docs/operations.md"), url.geturl()
    assert url.fragment == rule["alert"].lower(), f"{rule['alert']}: its own entry, by name"
    assert url.fragment in github_anchors(RUNBOOK.read_text()), f"no heading #{url.fragment}"


# ---- the dashboard -------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_a_grafana_dashboard():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize(("title", "expr"), _dashboard_exprs())
def test_every_dashboard_query_names_exported_metrics(title, expr):
    names = metric_names(expr)
    assert names, f"{title}: no metric found in {expr}"
    unknown = names - exported_series()
    assert not unknown, f"{title}: not exported by any service: {sorted(unknown)}"
    if "histogram_quantile" in expr:
        assert all(name.endswith("_bucket") for name in names), title
        assert re.search(r"\bby \((?:[\w, ]*, )?le\b", expr), f"{title}: group by le"


def test_the_dashboard_shows_what_operators_watch():
    shown = set().union(*(metric_names(expr) for _, expr in _dashboard_exprs()))
    wanted = {
        "assay_job_transitions_total",
        "assay_assessment_submit_duration_seconds_bucket",
        "assay_job_duration_seconds_bucket",
        "assay_jobs",
        "assay_jobs_oldest_age_seconds",
        "assay_outbox_unsent",
        "assay_outbox_oldest_unsent_age_seconds",
        "assay_jetstream_consumer_pending",
        "assay_jetstream_consumer_redelivered",
        "assay_sweep_jobs_failed_total",
        "assay_sweep_jobs_requeued_total",
        "assay_sweep_held_back_total",
        "assay_refunds_total",
        "assay_tokens_debited_total",
        "assay_tokens_refunded_total",
        "assay_notifier_active_watches",
        "assay_notifier_event_delivery_seconds_bucket",
        "assay_rpc_requests_total",
    }
    assert wanted <= shown, sorted(wanted - shown)


# ---- the overlay wires it all in ---------------------------------------------------------


def _kustomization() -> Manifest:
    return dict(yaml.safe_load((PROD / "kustomization.yaml").read_text()))


def test_the_prod_kustomization_lists_the_monitoring_objects():
    kinds = set()
    for resource in _kustomization()["resources"]:
        path = PROD / resource
        if path.is_file():
            kinds |= {doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc}
    assert PROMETHEUS_RULES.name in _kustomization()["resources"]
    assert {"PrometheusRule", "ServiceMonitor", "PodMonitor"} <= kinds


def test_the_dashboard_ships_as_a_configmap_for_the_grafana_sidecar(rendered):
    generators = [
        generator
        for generator in _kustomization()["configMapGenerator"]
        if DASHBOARD.relative_to(PROD).as_posix() in generator.get("files", [])
    ]
    assert len(generators) == 1
    options = generators[0]["options"]
    assert options["labels"]["grafana_dashboard"] == "1"
    config_map = of_kind(rendered["prod"], "ConfigMap")[generators[0]["name"]]
    assert json.loads(config_map["data"][DASHBOARD.name]) == _dashboard()


@pytest.mark.parametrize("tree", sorted(TREES))
def test_only_prod_needs_the_prometheus_operator(rendered, tree):
    """Dev clusters may lack the Operator's CRDs: an object of theirs would fail the apply."""
    crd_kinds = {m["kind"] for m in rendered[tree] if m["apiVersion"] == MONITORING_API}
    if tree == "prod":
        assert crd_kinds == {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
    else:
        assert not crd_kinds


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_deployment_serves_metrics_on_a_named_port(rendered, tree):
    config = next(
        m for m in of_kind(rendered[tree], "ConfigMap").values() if "ASSAY_NATS_URL" in m["data"]
    )
    assert config["data"][env_var("metrics_addr")].endswith(f":{METRICS_PORT}")
    for name, deployment in of_kind(rendered[tree], "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == str(METRICS_PORT), name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        (container,) = containers(deployment, init=False)
        assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"], name


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
    return True


def _scraped_by_service_monitor(monitor: Manifest, manifests: list[Manifest]) -> set[str]:
    ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    deployments = of_kind(manifests, "Deployment")
    scraped = set()
    for service in of_kind(manifests, "Service").values():
        if not _selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})):
            continue
        named = {port["name"]: port for port in service["spec"]["ports"]}
        assert ports <= set(named), f"Service {service['metadata']['name']} lacks {ports}"
        assert all(named[port]["port"] == METRICS_PORT for port in ports)
        scraped |= {
            name
            for name, deployment in deployments.items()
            if _selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
        }
    return scraped


def _scraped_by_pod_monitor(monitor: Manifest, manifests: list[Manifest]) -> set[str]:
    ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    scraped = set()
    for name, deployment in of_kind(manifests, "Deployment").items():
        if _selects(monitor["spec"]["selector"], pod_labels(deployment)):
            (container,) = containers(deployment, init=False)
            assert ports <= {port["name"] for port in container["ports"]}, name
            scraped.add(name)
    return scraped


def test_the_monitors_scrape_every_service_exactly_once(rendered):
    manifests = rendered["prod"]
    scrapes: list[str] = []
    for monitor in of_kind(manifests, "ServiceMonitor").values():
        scrapes += sorted(_scraped_by_service_monitor(monitor, manifests))
    for monitor in of_kind(manifests, "PodMonitor").values():
        scrapes += sorted(_scraped_by_pod_monitor(monitor, manifests))
    assert sorted(scrapes) == sorted(SERVICES), "each service scraped once (sums count it once)"


def test_the_monitors_name_the_job_after_the_app(rendered):
    """AssayNoLiveWorkers reads up{job="worker"}."""
    for kind in ("ServiceMonitor", "PodMonitor"):
        for monitor in of_kind(rendered["prod"], kind).values():
            assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
            assert set(monitor["spec"]) <= {
                "jobLabel",
                "selector",
                "endpoints",
                "podMetricsEndpoints",
            }
            endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
            for endpoint in endpoints:
                assert set(endpoint) <= {"port", "path", "interval", "scheme"}
                assert endpoint["path"] == "/metrics"
    assert 'job="worker"' in next(
        rule["expr"] for rule in alert_rules() if rule["alert"] == "AssayNoLiveWorkers"
    )


# ---- the runbook's metric list -----------------------------------------------------------


def _metrics_section() -> str:
    text = RUNBOOK.read_text()
    section = re.search(r"^## Metrics$(.*?)(?=^## )", text, flags=re.M | re.S)
    assert section, "docs/operations.md has no '## Metrics' section"
    return section.group(1)


def test_the_runbook_documents_every_metric():
    section = _metrics_section()
    documented = set(re.findall(r"^\| `(assay_\w+)` \|", section, flags=re.M))
    scraped = {scraped_name(name, kind) for name, kind in exported_families().items()}
    assert not scraped - documented, f"undocumented: {sorted(scraped - documented)}"
    assert not documented - scraped, f"documented, not exported: {sorted(documented - scraped)}"
    known = scraped | exported_series()
    for name in set(re.findall(r"\bassay_\w+", section)):
        prefix = name.endswith("_") and any(series.startswith(name) for series in known)
        assert name in known or prefix, f"the Metrics section names {name}: not exported"
