#!/usr/bin/env python3
"""Recovery-time gate: fail when a layer of the demo healed slower than the committed baseline allows.

Reads the JSON report of `selfheal-demo run --json FILE` and a baseline (recovery-baseline.json
beside this script). A layer fails the gate when
  - it did not heal (status "failed"), or
  - its time to heal exceeds  baseline × ratio + slack_seconds  (both from the baseline file, so
    the tolerance is stated where the numbers are, and reviewed with them).
Layers the report marks "not_available" are listed and skipped. Prints a Markdown table (also
appended to $GITHUB_STEP_SUMMARY when set). Exit 0 pass, 1 regression, 2 bad input.

Usage: recovery-gate.py --report REPORT.json [--baseline BASELINE.json]
       recovery-gate.py --self-test
"""
import argparse
import json
import os
import sys
import unittest
from pathlib import Path

DEFAULT_BASELINE = Path(__file__).with_name("recovery-baseline.json")


class BadInput(Exception):
    """A report or baseline that cannot be judged."""


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not JSON: {e}") from e


def judge(report, baseline):
    """Returns (rows, failed): one row per layer of the report, and whether any regressed."""
    try:
        ratio = float(baseline["tolerance"]["ratio"])
        slack = float(baseline["tolerance"]["slack_seconds"])
        base_layers = baseline["layers"]
        layers = report["layers"]
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"missing or malformed field: {e}") from e
    if ratio < 1 or slack < 0:
        raise BadInput("tolerance.ratio must be >= 1 and tolerance.slack_seconds >= 0")
    rows, failed = [], False
    for layer in layers:
        n = str(layer.get("layer"))
        name = layer.get("name", "")
        status = layer.get("status")
        heal = layer.get("time_to_heal_secs")
        base = base_layers.get(n, {}).get("time_to_heal_secs")
        allowed = None if base is None else base * ratio + slack
        if status == "not_available":
            verdict = "skipped (not available)"
        elif status != "healed" or heal is None:
            verdict = f"FAIL: did not heal ({layer.get('reason') or status})"
            failed = True
        elif allowed is None:
            verdict = "no baseline (add one)"
        elif heal > allowed:
            verdict = f"FAIL: {heal:.1f}s > {allowed:.1f}s allowed"
            failed = True
        else:
            verdict = "ok"
        rows.append((n, name, heal, base, allowed, verdict))
    if not rows:
        raise BadInput("the report has no layers")
    return rows, failed


def table(rows, ratio, slack):
    fmt = lambda v: "–" if v is None else f"{v:.1f}"
    out = [
        f"### Recovery-time gate (allowed = baseline × {ratio:g} + {slack:g} s)",
        "",
        "| layer | name | time to heal (s) | baseline (s) | allowed (s) | verdict |",
        "|------:|------|-----------------:|-------------:|------------:|---------|",
    ]
    for n, name, heal, base, allowed, verdict in rows:
        out.append(f"| {n} | {name} | {fmt(heal)} | {fmt(base)} | {fmt(allowed)} | {verdict} |")
    return "\n".join(out) + "\n"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", help="JSON report of selfheal-demo run --json")
    p.add_argument("--baseline", default=str(DEFAULT_BASELINE), help="baseline JSON (default: %(default)s)")
    p.add_argument("--self-test", action="store_true", help="run this script's unit tests")
    args = p.parse_args(argv)
    if args.self_test:
        result = unittest.main(argv=[sys.argv[0]], exit=False, verbosity=1).result
        return 0 if result.wasSuccessful() else 1
    if not args.report:
        p.error("--report is required")
    try:
        baseline = load(args.baseline)
        rows, failed = judge(load(args.report), baseline)
    except BadInput as e:
        print(f"recovery-gate: {e}", file=sys.stderr)
        return 2
    md = table(rows, baseline["tolerance"]["ratio"], baseline["tolerance"]["slack_seconds"])
    print(md)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(md)
    print("recovery-gate: " + ("REGRESSION" if failed else "pass"))
    return 1 if failed else 0


class GateTest(unittest.TestCase):
    BASE = {"tolerance": {"ratio": 2, "slack_seconds": 5}, "layers": {"1": {"time_to_heal_secs": 10}}}

    def run_one(self, **layer):
        entry = {"layer": 1, "name": "liveness", "status": "healed", "time_to_heal_secs": 12.0}
        entry.update(layer)
        return judge({"layers": [entry]}, self.BASE)

    def test_within_tolerance_passes(self):
        rows, failed = self.run_one(time_to_heal_secs=25.0)  # allowed 10*2+5 = 25
        self.assertFalse(failed)
        self.assertEqual(rows[0][5], "ok")

    def test_slower_than_allowed_fails(self):
        rows, failed = self.run_one(time_to_heal_secs=25.1)
        self.assertTrue(failed)
        self.assertIn("25.1s > 25.0s", rows[0][5])

    def test_not_healed_fails_whatever_the_time(self):
        _, failed = self.run_one(status="failed", time_to_heal_secs=None, reason="deadline passed")
        self.assertTrue(failed)

    def test_not_available_is_skipped(self):
        rows, failed = self.run_one(status="not_available", time_to_heal_secs=None)
        self.assertFalse(failed)
        self.assertTrue(rows[0][5].startswith("skipped"))

    def test_layer_without_baseline_passes_and_says_so(self):
        rows, failed = self.run_one(layer=9)
        self.assertFalse(failed)
        self.assertEqual(rows[0][5], "no baseline (add one)")

    def test_malformed_inputs_are_refused(self):
        with self.assertRaises(BadInput):
            judge({"layers": []}, self.BASE)
        with self.assertRaises(BadInput):
            judge({"nope": 1}, self.BASE)
        with self.assertRaises(BadInput):
            judge({"layers": [{"layer": 1}]}, {"tolerance": {"ratio": 0.5, "slack_seconds": 0}, "layers": {}})

    def test_committed_baseline_is_well_formed(self):
        baseline = load(DEFAULT_BASELINE)
        self.assertGreaterEqual(float(baseline["tolerance"]["ratio"]), 1)
        for n, entry in baseline["layers"].items():
            self.assertIn(n, [str(i) for i in range(1, 8)])
            self.assertGreater(entry["time_to_heal_secs"], 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
