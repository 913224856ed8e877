#!/usr/bin/env python3
"""Check the workflow rules actionlint does not know (style guide section 5).

For every .github/workflows/*.y*ml:
  - every `uses:` of a remote action is pinned to a full 40-hex commit SHA with the version in a
    comment on the same line (`uses: owner/repo@<sha> # v1.2.3`); local (./) actions are exempt;
  - every `run:` holds at most MAX_RUN_LINES lines of shell (logic belongs in a repo script);
  - `permissions: {}` at the top, and every job declares its own `permissions:`;
  - no `${{ ... }}` expression inside `run:` (values reach the shell through `env:`).

Usage:
  .github/ci/check-workflows.py [FILE...]     # default: every workflow; exit 1 on a violation
  .github/ci/check-workflows.py --self-test   # proves each rule fires on a bad workflow

Needs python3 and PyYAML.
"""

import re
import sys
import tempfile
from pathlib import Path

import yaml

MAX_RUN_LINES = 3
ROOT = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^\s*-?\s*uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d[\w.-]*\s*$")
USES = re.compile(r"^\s*-?\s*uses:\s*(\S+)")


def check(path):
    errors = []
    text = path.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        m = USES.match(line)
        if m and not m.group(1).startswith(("./", "docker://")) and not PINNED.match(line):
            errors.append(f"{path}:{n}: action not pinned to a commit SHA with '# vX' comment: {line.strip()}")
    doc = yaml.safe_load(text) or {}
    if doc.get("permissions") != {}:
        errors.append(f"{path}: top-level 'permissions: {{}}' missing")
    for job_id, job in (doc.get("jobs") or {}).items():
        if "uses" not in job and "permissions" not in job:
            errors.append(f"{path}: job '{job_id}' declares no permissions")
        for i, step in enumerate(job.get("steps") or [], 1):
            run = step.get("run")
            if run is None:
                continue
            name = step.get("name") or f"step {i}"
            lines = [ln for ln in run.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
            if len(lines) > MAX_RUN_LINES:
                errors.append(f"{path}: job '{job_id}', '{name}': {len(lines)} lines of shell (max {MAX_RUN_LINES}): move them into a script")
            if "${{" in run:
                errors.append(f"{path}: job '{job_id}', '{name}': ${{{{ }}}} inside run: pass the value through env:")
    return errors


BAD = """\
name: bad
on: push
jobs:
  a:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - uses: actions/cache@5a3ec84eff668545956fd18022155c47e93e2684
      - run: echo ${{ github.head_ref }}
      - run: |
          one
          two
          three
          four
"""
EXPECTED = ["not pinned", "not pinned", "permissions: {}", "declares no permissions", "lines of shell", "inside run"]


def self_test():
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.yaml"
        bad.write_text(BAD)
        errors = check(bad)
    missing = [e for e in EXPECTED if sum(e in x for x in errors) < EXPECTED.count(e)]
    for e in errors:
        print(f"expected violation found: {e}")
    if missing or len(errors) != len(EXPECTED):
        print(f"self-test FAILED: expected {EXPECTED}, got {len(errors)} violations", file=sys.stderr)
        return 1
    print("check-workflows self-test: every rule fires")
    return 0


def main(argv):
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--self-test"]:
        return self_test()
    files = [Path(a) for a in argv] or sorted((ROOT / ".github/workflows").glob("*.y*ml"))
    errors = [e for f in files for e in check(f)]
    for e in errors:
        print(e, file=sys.stderr)
    print(f"check-workflows: {len(files)} workflows, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
