#!/usr/bin/env python3
"""Structural checks of the generated alert rules that promtool cannot make.

For every profile: the PrometheusRule carries exactly the groups of the plain rule file; every
alert has a severity, a summary, a description and a runbook_url whose file exists in
docs/runbooks/; the profile's promtool test file has, for every alert, at least one case where
it fires and one where it stays silent; the workshop profile waits at most 30s on any alert;
every recorded series (the sli group) is rendered in every profile and has its values checked by
a promql_expr_test of that profile.
Prints one "ok"/"FAIL" line per check; exit status 1 when any failed.
Usage: self-healing/tests/check_rules.py
"""

import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SH = HERE.parent
ROOT = SH.parent
failures = 0


def check(ok, what):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures += 1


def seconds(d):
    total = 0
    for n, unit in re.findall(r"(\d+)(ms|s|m|h|d)", d):
        total += int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


source = yaml.safe_load((SH / "alerts.yaml").read_text())
source_alerts = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
source_records = sorted(
    r["record"].replace("${window}", w)
    for g in source["groups"]
    for w in g.get("windows") or [""]
    for r in g["rules"]
    if "record" in r
)
check(bool(source_records), f"the source records series ({len(source_records)})")
for profile in source["profiles"]:
    plain = yaml.safe_load((SH / "rules" / f"{profile}.rules.yaml").read_text())
    manifest = yaml.safe_load((SH / "prometheusrules" / f"{profile}.yaml").read_text())
    check(
        manifest.get("kind") == "PrometheusRule" and manifest["spec"]["groups"] == plain["groups"],
        f"{profile}: PrometheusRule groups equal the plain rule file's",
    )
    records = sorted(r["record"] for g in plain["groups"] for r in g["rules"] if "record" in r)
    check(records == source_records, f"{profile}: every recorded series is rendered ({len(records)})")
    rules = [r for g in plain["groups"] for r in g["rules"] if "alert" in r]
    names = [r["alert"] for r in rules]
    check(names == source_alerts, f"{profile}: every source alert is rendered ({len(names)})")
    for r in rules:
        a, lab = r["annotations"], r["labels"]
        runbook = ROOT / "docs" / "runbooks" / f"{r['alert']}.md"
        check(
            lab.get("severity") in ("critical", "warning", "info")
            and lab.get("profile") == profile
            and a.get("summary")
            and a.get("description")
            and a.get("runbook_url", "").endswith(f"/docs/runbooks/{r['alert']}.md")
            and runbook.is_file(),
            f"{profile}/{r['alert']}: severity, summary, description, runbook_url -> {runbook.relative_to(ROOT)}",
        )
        if profile == "workshop":
            check(seconds(r.get("for", "0s")) <= 30, f"workshop/{r['alert']}: for {r.get('for', '0s')} <= 30s")

    tests = yaml.safe_load((HERE / f"{profile}.test.yaml").read_text())
    fires, silent = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    for n in names:
        check(n in fires and n in silent, f"{profile}.test.yaml: {n} has a firing and a silent case")
    exprs = " ".join(c["expr"] for t in tests["tests"] for c in t.get("promql_expr_test", []))
    for n in records:
        check(
            re.search(re.escape(n) + r"\b", exprs) is not None,
            f"{profile}.test.yaml: the values of {n} are checked (promql_expr_test)",
        )

sys.exit(1 if failures else 0)
