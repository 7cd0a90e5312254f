"""docs/operations.md names real objects, and explains every alert of the prod overlay's rules."""

from __future__ import annotations

import re

from tests.deploy.conftest import ROOT, alert_rules, of_kind

RUNBOOK = ROOT / "docs" / "operations.md"
PACKAGES = ("assaylib", "archive_svc", "assessment_svc", "worker", "notifier")
KIND_OF = {
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "cronjob": "CronJob",
    "svc": "Service",
    "hpa": "HorizontalPodAutoscaler",
}
REFERENCE = re.compile(r"(?<![\w/.-])(deploy|statefulset|cronjob|svc)/([a-z][a-z0-9-]*)(?![\w/.-])")
METRIC = re.compile(r"\bassay_[a-z_]+\b")
METRIC_DEFINITION = re.compile(r"""(?:Counter|Gauge|Histogram|Summary)\(\s*["'](assay_[a-z_]+)""")


def test_the_runbook_names_objects_the_overlays_create(rendered):
    text = RUNBOOK.read_text()
    names = {
        (kind, name)
        for manifests in rendered.values()
        for kind, name in ((m["kind"], m["metadata"]["name"]) for m in manifests)
    }
    commands = "\n".join(line for line in text.splitlines() if "kubectl" in line)
    references = set(REFERENCE.findall(commands))
    assert ("cronjob", "assay-sweep") in references
    for short, name in references:
        assert (KIND_OF[short], name) in names, f"{short}/{name} is not in any overlay"
    assert "kubectl -n assay create job --from=cronjob/assay-sweep" in text
    assert "hpa worker" in text and of_kind(rendered["prod"], "HorizontalPodAutoscaler")["worker"]


def test_the_alert_rules_use_metrics_the_services_export():
    exported = set()
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            found = METRIC_DEFINITION.findall(source.read_text())
            exported |= {re.sub(r"_total$", "", name) for name in found}
    assert "assay_outbox_unsent" in exported  # the scan finds definitions
    rules = alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        for metric in METRIC.findall(rule["expr"]):
            base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
            assert base in exported, f"{rule['alert']}: {metric} is not exported"


def test_every_alert_is_explained():
    text = RUNBOOK.read_text()
    headings = set(re.findall(r"^### (\w+)$", text, flags=re.M))
    for rule in alert_rules():
        assert rule["alert"] in headings, f"{rule['alert']} has no what-to-do entry (### heading)"


def test_the_runbook_points_at_the_rules_instead_of_copying_them():
    text = RUNBOOK.read_text()
    assert "deploy/k8s/overlays/prod/prometheusrule.yaml" in text
    assert "kind: PrometheusRule" not in text, "a copy of the rules goes stale: link the file"
