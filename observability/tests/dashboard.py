#!/usr/bin/env python3
"""Structure checks of Grafana dashboards (observability/dashboards/*.json).

Checks each dashboard for: a Prometheus datasource variable that every panel, query and
annotation uses (no hard-coded datasource uid, so the dashboard works on any Grafana); unique
panel ids (rows included); every panel that is not a row has at least one non-empty PromQL
query with unique refIds; every $variable a query uses is defined (or a Grafana built-in);
panels inside the 24-column grid and not overlapping; a uid and a title.

--self-test breaks a copy of each dashboard in every way the checks look for and fails unless
each broken copy is caught, so the checks themselves are shown to be able to fail.

Usage: observability/tests/dashboard.py [--self-test] [DASHBOARD.json ...]
Default: every observability/dashboards/*.json. Prints "dashboard: N passed, N failed".
"""

import copy
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GLOB = os.path.join(HERE, "..", "dashboards", "*.json")
DS_REFS = {"${datasource}", "$datasource"}
# Variables Grafana defines itself.
BUILTIN_VARS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                "__range_ms", "__from", "__to", "__dashboard", "__name", "__org", "__user"}
VAR_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def all_panels(dash):
    """Every panel, including those nested in collapsed rows."""
    for p in dash.get("panels", []):
        yield p
        for inner in p.get("panels", []) or []:
            yield inner


def uses_ds_variable(ds):
    if isinstance(ds, dict):
        return ds.get("uid") in DS_REFS
    return isinstance(ds, str) and ds in DS_REFS


def problems(dash):
    """List of human-readable problems; empty when the dashboard is fine."""
    out = []
    if not dash.get("uid"):
        out.append("dashboard has no uid (provisioning and links need a stable one)")
    if not dash.get("title"):
        out.append("dashboard has no title")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_vars = [v for v in variables.values() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars or "datasource" not in variables:
        out.append("no Prometheus datasource variable named 'datasource'")
    for name, v in variables.items():
        if v.get("type") == "query":
            if not uses_ds_variable(v.get("datasource")):
                out.append(f"variable {name}: datasource is not the datasource variable")
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if not q:
                out.append(f"variable {name}: empty query")
    defined = set(variables) | BUILTIN_VARS

    def check_vars(where, expr):
        for ref in VAR_RE.findall(expr):
            if ref not in defined:
                out.append(f"{where}: uses undefined variable ${ref}")

    for name, v in variables.items():
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            check_vars(f"variable {name}", q)

    seen_ids = {}
    cells = {}
    for p in all_panels(dash):
        pid = p.get("id")
        title = p.get("title", "?")
        if not isinstance(pid, int):
            out.append(f"panel {title!r}: id missing or not an integer")
        elif pid in seen_ids:
            out.append(f"panel id {pid} used by {seen_ids[pid]!r} and {title!r}")
        else:
            seen_ids[pid] = title
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            out.append(f"panel {title!r}: gridPos incomplete")
        else:
            if g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
                out.append(f"panel {title!r}: outside the 24-column grid")
            for cx in range(g["x"], g["x"] + g["w"]):
                for cy in range(g["y"], g["y"] + g["h"]):
                    if (cx, cy) in cells:
                        out.append(f"panel {title!r} overlaps {cells[(cx, cy)]!r}")
                        break
                    cells[(cx, cy)] = title
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        if not uses_ds_variable(p.get("datasource")):
            out.append(f"panel {title!r}: datasource is not the datasource variable")
        targets = p.get("targets") or []
        exprs = [t for t in targets if (t.get("expr") or "").strip()]
        if not exprs:
            out.append(f"panel {title!r}: no query")
        refids = [t.get("refId") for t in targets]
        if len(set(refids)) != len(refids) or None in refids:
            out.append(f"panel {title!r}: refIds missing or repeated")
        for t in targets:
            if not uses_ds_variable(t.get("datasource", p.get("datasource"))):
                out.append(f"panel {title!r} query {t.get('refId')}: datasource is not the datasource variable")
            check_vars(f"panel {title!r}", t.get("expr") or "")
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        name = a.get("name", "?")
        if not (a.get("expr") or "").strip():
            out.append(f"annotation {name!r}: no query")
        if not uses_ds_variable(a.get("datasource")):
            out.append(f"annotation {name!r}: datasource is not the datasource variable")
        check_vars(f"annotation {name!r}", a.get("expr") or "")
    return out


def first_query_panel(d):
    return next(p for p in all_panels(d) if p.get("type") != "row")


def breakages():
    """(what, function that breaks a dashboard copy in place)."""
    def dup_id(d):
        ps = [p for p in all_panels(d)]
        ps[-1]["id"] = ps[0]["id"]

    def no_query(d):
        for t in first_query_panel(d)["targets"]:
            t["expr"] = " "

    def no_ds_var(d):
        d["templating"]["list"] = [v for v in d["templating"]["list"] if v.get("type") != "datasource"]

    def hard_coded_ds(d):
        first_query_panel(d)["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}

    def undefined_var(d):
        t = first_query_panel(d)["targets"][0]
        t["expr"] = t["expr"].replace("$namespace", "$cluster")

    def overlap(d):
        ps = [p for p in all_panels(d) if p.get("type") != "row"]
        ps[1]["gridPos"] = dict(ps[0]["gridPos"])

    return [("a duplicate panel id", dup_id), ("a panel without a query", no_query),
            ("no datasource variable", no_ds_var), ("a hard-coded datasource uid", hard_coded_ds),
            ("an undefined variable", undefined_var), ("overlapping panels", overlap)]


def main(argv):
    self_test = "--self-test" in argv
    args = [a for a in argv if a != "--self-test"]
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        print(f"unknown option {unknown[0]}\n{__doc__}", file=sys.stderr)
        return 2
    paths = args or sorted(glob.glob(DEFAULT_GLOB))
    if not paths:
        print(f"no dashboards found at {DEFAULT_GLOB}", file=sys.stderr)
        return 1
    passed = failed = 0
    for path in paths:
        name = os.path.relpath(path)
        try:
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
        except (OSError, ValueError) as e:
            print(f"!!! {name}: not readable JSON: {e}")
            failed += 1
            continue
        found = problems(dash)
        if found:
            failed += 1
            print(f"!!! {name}: {len(found)} problem(s)")
            for p in found:
                print(f"    - {p}")
        else:
            passed += 1
            n = sum(1 for p in all_panels(dash) if p.get("type") != "row")
            print(f"✔ {name}: structure ok ({n} panels)")
        if self_test and not found:
            for what, breaker in breakages():
                broken = copy.deepcopy(dash)
                breaker(broken)
                if problems(broken):
                    passed += 1
                    print(f"✔ {name}: a copy with {what} is rejected")
                else:
                    failed += 1
                    print(f"!!! {name}: a copy with {what} was NOT rejected")
    print(f"dashboard: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
