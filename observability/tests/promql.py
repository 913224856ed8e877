#!/usr/bin/env python3
"""Evaluates every PromQL expression of the dashboards and alert rules on a running Prometheus.

For each expression (dashboard panel queries, variable queries and annotations; every `expr` of
the rule files and PrometheusRule manifests given):

1. Prometheus parses it (/api/v1/parse_query) and evaluates it (/api/v1/query) without error.
2. Every metric it selects is either scraped by this Prometheus right now, or explained:
   - EXTERNAL: series other exporters provide (kube-state-metrics, cAdvisor, Prometheus' own
     ALERTS, the Pushgateway fed by auto-rollback.sh) - not running here, parse check only;
   - LAZY: our own labelled counters that have no series until the first event (a recycle,
     a healing action); their name must still appear in the source file that registers them.
     An alert rule that selects label values of such a counter nothing has produced yet
     (outcome="failed") is parse-only too, with the selector named.
   A selected metric that is none of these fails the check: a renamed metric breaks the test.
3. When every metric it selects is scraped, it must return data. For alert rules the trailing
   threshold (`> 0.05`) is dropped first, so the test sees the signal even while nothing fires;
   `absent(X)` is checked as X (it returns data exactly when nothing is wrong).

Grafana variables are replaced by the values the harness scrapes with (--var name=value);
$__rate_interval by 1m. Prints one line per expression and
"promql: N passed, N failed" plus the counts of data-checked and parse-only expressions.

Usage: promql.py --prometheus URL [--var NAME=VALUE ...] [--dashboard FILE ...] [--rules FILE ...]
                 [--require METRIC ...] [--retry-secs N]
                 [--json REPORT]
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# name prefix -> why it cannot be checked for data here
EXTERNAL = {
    "kube_": "kube-state-metrics series (not running in this test)",
    "container_": "cAdvisor series from the kubelet (not scraped in this test)",
    "ALERTS": "Prometheus' own alert state: only exists while an alert is pending or firing",
    "selfheal_autorollback_": "pushed to a Pushgateway by self-healing/auto-rollback.sh --pushgateway",
}
# metric -> (file that registers it, the string that must appear there, why it may be absent)
LAZY = {
    "selfheal_controller_recycles_total": (
        "controller/src/metrics.rs", '"recycles_total"', "labelled counter: no series until the first recycle"),
    "selfheal_controller_healing_actions_total": (
        "controller/src/metrics.rs", '"healing_actions_total"', "labelled counter: no series until the first healing action"),
    "selfheal_controller_not_recycled_total": (
        "controller/src/metrics.rs", '"not_recycled_total"', "labelled counter: no series until a pod is left alone"),
    "selfheal_controller_reconcile_errors_total": (
        "controller/src/metrics.rs", '"reconcile_errors_total"', "labelled counter: no series until a reconcile fails"),
}
AUTOROLLBACK_SRC = "self-healing/auto-rollback.sh"
THRESHOLD_RE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(bool\s+)?-?[0-9.]+(e-?[0-9]+)?\s*$")
COMPARISON_OPS = {">", "<", ">=", "<=", "==", "!="}
LABEL_VALUES_RE = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                return json.load(e)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}

    def names(self):
        return set(self.get("/api/v1/label/__name__/values").get("data") or [])


def selectors(ast):
    """Metric names selected anywhere in a parse_query AST."""
    out = set()
    if isinstance(ast, dict):
        if ast.get("type") in ("vectorSelector", "matrixSelector") and ast.get("name"):
            out.add(ast["name"])
        for v in ast.values():
            out |= selectors(v)
    elif isinstance(ast, list):
        for v in ast:
            out |= selectors(v)
    return out


def substitute(expr, variables):
    expr = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    base = os.path.basename(path)
    panels = []
    for p in d.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []) or [])
    for p in panels:
        for t in p.get("targets", []) or []:
            if (t.get("expr") or "").strip():
                yield f"{base} panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"], False
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = LABEL_VALUES_RE.match(q or "")
        # label_values(m, l) is Grafana's series API call; group by (l) (m) selects the same series.
        expr = f"group by ({m.group(2)}) ({m.group(1)})" if m else q
        yield f"{base} variable ${v.get('name')}", expr, False
    for a in d.get("annotations", {}).get("list", []):
        if not a.get("builtIn") and (a.get("expr") or "").strip():
            yield f"{base} annotation {a.get('name')!r}", a["expr"], True


def rule_exprs(path):
    base = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        groups = doc.get("groups") or (doc.get("spec") or {}).get("groups") or []
        for g in groups:
            for r in g.get("rules", []):
                name = r.get("alert") or r.get("record")
                yield f"{base} {g.get('name')}/{name}", str(r["expr"]), bool(r.get("alert"))


def strip_threshold(expr, ast):
    """The signal of an alert: the expression without its trailing `> number`; for
    `absent(X)` (fires when X has no series), X itself."""
    if isinstance(ast, dict) and ast.get("type") == "call" and (ast.get("func") or {}).get("name") == "absent":
        inner = expr.strip()
        if inner.startswith("absent(") and inner.endswith(")"):
            return inner[len("absent("):-1]
    if isinstance(ast, dict) and ast.get("type") == "binaryExpr" and ast.get("op") in COMPARISON_OPS \
            and (ast.get("rhs") or {}).get("type") == "numberLiteral":
        stripped = THRESHOLD_RE.sub("", expr.rstrip())
        if stripped != expr.rstrip():
            return stripped
    return expr


def selector_text(node):
    """`{name="value", ...}` of a vector or matrix selector node of the AST."""
    return "{" + ", ".join(f'{m["name"]}{m["type"]}{json.dumps(m["value"])}' for m in node.get("matchers") or []) + "}"


def lazy_label_selectors(ast):
    """Selectors of a LAZY metric that also match on other labels (e.g. outcome="failed")."""
    out = []
    if isinstance(ast, dict):
        if ast.get("type") in ("vectorSelector", "matrixSelector") and ast.get("name") in LAZY and \
                any(m["name"] != "__name__" for m in ast.get("matchers") or []):
            out.append(selector_text(ast))
        for v in ast.values():
            out += lazy_label_selectors(v)
    elif isinstance(ast, list):
        for v in ast:
            out += lazy_label_selectors(v)
    return out


def source_has(rel, needle):
    try:
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            return needle in f.read()
    except OSError:
        return False


def check(prom, where, expr, strip, scraped, retry_secs):
    """(ok, kind, message); kind is 'data', 'parse-only' or 'fail'."""
    parsed = prom.get("/api/v1/parse_query", query=expr)
    if parsed.get("status") != "success":
        return False, "fail", f"does not parse: {parsed.get('error')}"
    ast = parsed.get("data")
    evaluated = prom.get("/api/v1/query", query=expr)
    if evaluated.get("status") != "success":
        return False, "fail", f"evaluation error: {evaluated.get('error')}"
    names = selectors(ast)
    reasons = []
    for n in sorted(names - scraped):
        ext = next((why for pre, why in EXTERNAL.items() if n.startswith(pre)), None)
        if n.startswith("selfheal_autorollback_"):
            if not source_has(AUTOROLLBACK_SRC, n):
                return False, "fail", f"{n} is not pushed by {AUTOROLLBACK_SRC} (renamed?)"
        if ext:
            reasons.append(f"{n}: {ext}")
            continue
        if n in LAZY:
            src, needle, why = LAZY[n]
            if not source_has(src, needle):
                return False, "fail", f"{n} is not registered in {src} any more (renamed?)"
            reasons.append(f"{n}: {why}")
            continue
        return False, "fail", f"selects {n}, which nothing here exports (renamed or removed metric?)"
    if reasons:
        return True, "parse-only", "parses; " + "; ".join(reasons)
    signal = strip_threshold(expr, ast) if strip else expr
    deadline = time.time() + retry_secs
    while True:
        res = prom.get("/api/v1/query", query=signal)
        n = len((res.get("data") or {}).get("result") or []) if res.get("status") == "success" else 0
        if res.get("data", {}).get("resultType") == "scalar":
            n = 1
        if n:
            note = " (threshold or absent() dropped)" if signal != expr else ""
            return True, "data", f"{n} series{note}"
        # An alert on a rare event (a failed force delete) selects label values of a LAZY
        # counter that get a series only when the event first happens: parse-only while none does.
        unborn = [sel for sel in lazy_label_selectors(ast)
                  if not ((prom.get("/api/v1/query", query=f"count({sel})").get("data") or {}).get("result"))] \
            if strip else []
        if unborn:
            return True, "parse-only", "parses, returns no data; no series of " + ", ".join(unborn) + \
                " yet (labelled counter: no series until the first such event)"
        if time.time() >= deadline:
            return False, "fail", "returned no data although every metric it selects is scraped" + \
                (f"; evaluated without its threshold: {signal.strip()}" if signal != expr else "")
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--dashboard", action="append", default=[])
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("--retry-secs", type=int, default=20)
    ap.add_argument("--require", action="append", default=[], metavar="METRIC",
                    help="fail unless this metric is scraped (then its expressions are data-checked)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    variables = {}
    for v in args.var:
        if "=" not in v:
            ap.error(f"--var wants NAME=VALUE, got {v!r}")
        k, val = v.split("=", 1)
        variables[k] = val
    if not args.dashboard and not args.rules:
        ap.error("give at least one --dashboard or --rules file")
    prom = Prom(args.prometheus)
    scraped = prom.names()
    if not scraped:
        print(f"!!! {args.prometheus} has no series at all: is it scraping?", file=sys.stderr)
        return 1
    missing = [m for m in args.require if m not in scraped]
    for m in missing:
        print(f"!!! required metric {m} is not scraped by {args.prometheus}")
    items = []
    for path in args.dashboard:
        items += [(w, substitute(e, variables), s) for w, e, s in dashboard_exprs(path)]
    for path in args.rules:
        items += list(rule_exprs(path))
    counts = {"data": 0, "parse-only": 0, "fail": len(missing)}
    report = []
    for where, expr, strip in items:
        ok, kind, msg = check(prom, where, expr, strip, scraped, args.retry_secs)
        counts[kind] += 1
        report.append({"where": where, "expr": expr, "result": kind, "detail": msg})
        print(f"{'✔' if ok else '!!!'} [{kind}] {where}: {msg}")
        if not ok:
            print(f"      expr: {' '.join(expr.split())}")
    total = len(items)
    parsed = total - sum(1 for r in report if r["detail"].startswith("does not parse"))
    print(f"expressions: {total}, parse: {parsed}/{total}, returned data: {counts['data']}, "
          f"parse-only (external or not-yet-existing series): {counts['parse-only']}, failed: {counts['fail']}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"counts": counts, "total": total, "expressions": report}, f, indent=2)
    print(f"promql: {counts['data'] + counts['parse-only']} passed, {counts['fail']} failed")
    return 0 if counts["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
