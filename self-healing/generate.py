#!/usr/bin/env python3
"""Render self-healing/alerts.yaml (the one source of the alert and recording rules) per timing profile.

Writes, for every profile P in the source:
  rules/P.rules.yaml        a plain Prometheus rule file (promtool check/test rules, a bare Prometheus)
  prometheusrules/P.yaml    the same groups in a monitoring.coreos.com/v1 PrometheusRule

Usage:
  self-healing/generate.py                 # (re)write the generated files
  self-healing/generate.py --check         # exit 1 and name every stale or missing file
  self-healing/generate.py --out-dir DIR   # write/check under DIR instead of self-healing/

Needs python3 and PyYAML.
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yaml"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
SEVERITIES = ("critical", "warning", "info")
# A recorded series' name: level:metric:operations (Prometheus' naming convention for rules).
RECORD_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+$")
# A recorded name of ours inside an expression (must be recorded in the same profile).
RECORDED_REF = re.compile(r"\bselfheal:[a-zA-Z0-9_:]+")


class Dumper(yaml.SafeDumper):
    """Block scalars for multi-line strings, so generated expressions stay readable."""


def _str(dumper, value):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


Dumper.add_representer(str, _str)


def fail(msg):
    print(f"generate.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def substitute(text, params, where):
    """Replace ${name} with the profile's parameter; an unknown name is an error."""

    def one(m):
        if m.group(1) not in params:
            fail(f"{where}: unknown parameter ${{{m.group(1)}}}")
        return str(params[m.group(1)])

    return PLACEHOLDER.sub(one, text)


def fold(text):
    """One line per description/summary: the source wraps them for reading."""
    return " ".join(text.split())


def render_alert(rule, params, profile_name, base, where):
    name = rule["alert"]
    if rule.get("severity") not in SEVERITIES:
        fail(f"{where}: severity must be one of {SEVERITIES}")
    for key in ("expr", "for", "summary", "description"):
        if not rule.get(key):
            fail(f"{where}: missing {key}")
    out = {
        "alert": name,
        "expr": substitute(rule["expr"], params, where).rstrip("\n") + "\n",
    }
    duration = substitute(str(rule["for"]), params, where)
    if duration not in ("0s", "0m", "0"):
        out["for"] = duration
    out["labels"] = {"severity": rule["severity"], "profile": profile_name}
    out["annotations"] = {
        "summary": fold(substitute(rule["summary"], params, where)),
        "description": fold(substitute(rule["description"], params, where)),
        "runbook_url": f"{base}/{name}.md",
    }
    return out


def render_record(rule, params, where):
    extra = set(rule) - {"record", "expr"}
    if extra:
        fail(f"{where}: a recording rule has only record and expr, not {sorted(extra)}")
    if not rule.get("expr"):
        fail(f"{where}: missing expr")
    name = substitute(rule["record"], params, where)
    if not RECORD_NAME.match(name):
        fail(f"{where}: recorded name {name!r} is not level:metric:operations")
    return {"record": name, "expr": substitute(rule["expr"], params, where).rstrip("\n") + "\n"}


def render_groups(src, profile_name, profile):
    base = src["runbook_base_url"].rstrip("/")
    constants = src.get("constants") or {}
    groups = []
    seen = set()
    recorded = set()
    for group in src["groups"]:
        rules = []
        for window in group.get("windows") or [None]:
            params = {**constants, **profile["params"]}
            if window is not None:
                params["window"] = window
            for rule in group["rules"]:
                if ("alert" in rule) == ("record" in rule):
                    fail(f"{profile_name}/{group['name']}: every rule has exactly one of alert or record: {rule}")
                if "record" in rule:
                    out = render_record(rule, params, f"{profile_name}/{rule['record']}")
                    key = out["record"]
                    recorded.add(key)
                else:
                    key = rule["alert"]
                    out = render_alert(rule, params, profile_name, base, f"{profile_name}/{key}")
                if key in seen:
                    fail(f"{profile_name}/{key}: duplicate rule name")
                seen.add(key)
                rules.append(out)
        g = {"name": f"selfheal-{profile_name}-{group['name']}"}
        if profile.get("interval"):
            g["interval"] = profile["interval"]
        g["rules"] = rules
        groups.append(g)
    # Every recorded series an expression reads must be recorded here: a typo or a window that is
    # not in `windows:` would otherwise be an alert that silently never fires.
    for g in groups:
        for r in g["rules"]:
            for ref in RECORDED_REF.findall(r["expr"]):
                if ref not in recorded:
                    fail(f"{profile_name}/{r.get('alert') or r.get('record')}: reads {ref}, which no rule records")
    return groups


def header(profile_name, profile, kind):
    desc = fold(profile["description"])
    lines = [
        f"# GENERATED by self-healing/generate.py from self-healing/alerts.yaml: do not edit.",
        f"# {kind}, profile {profile_name.upper()}.",
    ]
    words, line = desc.split(), "#"
    for w in words:
        if len(line) + 1 + len(w) > 100:
            lines.append(line)
            line = "#"
        line += " " + w
    lines.append(line)
    return "\n".join(lines) + "\n"


def dump(doc):
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)


def render(src):
    """{relative path: text} of every generated file."""
    files = {}
    profiles = src.get("profiles") or {}
    if not profiles:
        fail("no profiles in the source")
    for name, profile in profiles.items():
        groups = render_groups(src, name, profile)
        files[f"rules/{name}.rules.yaml"] = header(name, profile, "Plain Prometheus rule file") + dump(
            {"groups": groups}
        )
        meta = src["prometheus_rule"]
        manifest = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": f"selfheal-alerts-{name}",
                "namespace": meta["namespace"],
                "labels": {**meta.get("labels", {}), "selfheal.io/alert-profile": name},
            },
            "spec": {"groups": groups},
        }
        files[f"prometheusrules/{name}.yaml"] = header(name, profile, "PrometheusRule for kube-prometheus-stack") + dump(
            manifest
        )
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail when a generated file is stale or missing")
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where the generated files live (default: self-healing/)")
    ap.add_argument("--source", type=Path, default=SOURCE, help="the rule source (default: self-healing/alerts.yaml)")
    args = ap.parse_args()

    src = yaml.safe_load(args.source.read_text())
    files = render(src)
    if args.check:
        stale = [p for p, text in files.items() if not (args.out_dir / p).is_file() or (args.out_dir / p).read_text() != text]
        for p in stale:
            print(f"stale: {args.out_dir / p} (run self-healing/generate.py and commit the result)", file=sys.stderr)
        if stale:
            sys.exit(1)
        print(f"generated files are fresh: {', '.join(sorted(files))}")
        return
    for p, text in files.items():
        path = args.out_dir / p
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
