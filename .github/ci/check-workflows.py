#!/usr/bin/env python3
"""Check the workflow rules actionlint does not know (style guide section 5).

For every .github/workflows/*.y*ml:
  - every `uses:` of a remote action is pinned to a full 40-hex commit SHA with the version in a
    comment on the same line (`uses: owner/repo@<sha> # v1.2.3`); local (./) actions are exempt;
  - every `run:` holds at most MAX_RUN_LINES lines of shell (logic belongs in a repo script);
  - `permissions: {}` at the top, and every job declares its own `permissions:`;
  - no `${{ ... }}` expression inside `run:` (values reach the shell through `env:`);
  - every command a `run:` calls is an entry point listed in .github/ci/entry-points.txt (the
    list `make test` runs its share of): `test`/`test-cluster` ones exactly as listed, `runner`
    and `deploy` ones with any arguments. Commands are split at `&&`, `||`, `;`, `|` and lines.
And for the list itself: each `test`/`test-cluster` entry is `make TARGET` with TARGET in the
Makefile, and some workflow step runs it (CI runs what make test runs).

Usage:
  .github/ci/check-workflows.py [FILE...]     # default: every workflow; exit 1 on a violation
  .github/ci/check-workflows.py --self-test   # proves each rule fires on a bad workflow

Needs python3 and PyYAML.
"""

import re
import shlex
import sys
import tempfile
from pathlib import Path

import yaml

MAX_RUN_LINES = 3
ROOT = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^\s*-?\s*uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d[\w.-]*\s*$")
USES = re.compile(r"^\s*-?\s*uses:\s*(\S+)")
ENTRY_POINTS = ROOT / ".github/ci/entry-points.txt"
EXACT_KINDS = ("test", "test-cluster")
KINDS = EXACT_KINDS + ("runner", "deploy")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def load_entry_points(path=ENTRY_POINTS):
    """[(kind, [word, ...])] from the list; a malformed line is an error."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kind, _, command = line.strip().partition(" ")
        if kind not in KINDS or not command.strip():
            raise SystemExit(f"{path}:{n}: expected 'KIND COMMAND' with KIND one of {', '.join(KINDS)}: {line}")
        entries.append((kind, command.split()))
    return entries


def commands(run):
    """The commands of a run: script, each as a word list (leading VAR=value assignments dropped)."""
    out = []
    for segment in re.split(r"&&|\|\||;|\||\n", run):
        segment = segment.strip()
        if not segment or segment.startswith("#"):
            continue
        try:
            words = shlex.split(segment, comments=True)
        except ValueError:
            words = segment.split()
        while words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            out.append(words)
    return out


def entry_point_error(words, entries):
    """None when `words` calls a listed entry point the way its kind allows, else why not."""
    for kind, entry in entries:
        if words[: len(entry)] != entry:
            continue
        if kind in EXACT_KINDS and words != entry:
            return f"'{' '.join(words)}' must be exactly '{' '.join(entry)}' (make test runs it that way)"
        return None
    return f"'{' '.join(words)}' is not an entry point listed in {ENTRY_POINTS.relative_to(ROOT)}"


def check(path, entries=None, used=None):
    entries = load_entry_points() if entries is None else entries
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
            for words in commands(run):
                why = entry_point_error(words, entries)
                if why:
                    errors.append(f"{path}: job '{job_id}', '{name}': {why}")
                elif used is not None:
                    used.add(" ".join(words))
    return errors


def check_list(entries, used, makefile=ROOT / "Makefile"):
    """Each test entry is a Makefile target that some workflow step runs."""
    errors = []
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile.read_text(), re.M))
    for kind, entry in entries:
        if kind not in EXACT_KINDS:
            continue
        command = " ".join(entry)
        if len(entry) != 2 or entry[0] != "make" or entry[1] not in targets:
            errors.append(f"{ENTRY_POINTS.name}: '{command}' ({kind}) is not 'make TARGET' with TARGET in the Makefile")
        if command not in used:
            errors.append(f"{ENTRY_POINTS.name}: '{command}' ({kind}) is run by no workflow step")
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
          make lint
          make test-unit
          make lint
          make test-unit
      - run: cargo test --workspace --test 'cluster*'
      - run: make test-unit --keep-going
      - run: FOO=1 self-healing/rollback-to.sh --revision 3 | tee out.json
"""
EXPECTED = ["not pinned", "not pinned", "permissions: {}", "declares no permissions", "lines of shell",
            "inside run", "'echo", "'cargo test", "must be exactly", "'tee out.json' is not",
            # from check_list on a list naming a target the Makefile lacks
            "not 'make TARGET'", "run by no workflow step"]


def self_test():
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "bad.yaml"
        bad.write_text(BAD)
        errors = check(bad)
        errors += check_list([("test", ["make", "no-such-target"])], set())
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
    entries = load_entry_points()
    used = set()
    files = [Path(a) for a in argv] or sorted((ROOT / ".github/workflows").glob("*.y*ml"))
    errors = [e for f in files for e in check(f, entries, used)]
    if not argv:
        errors += check_list(entries, used)
    for e in errors:
        print(e, file=sys.stderr)
    print(f"check-workflows: {len(files)} workflows, {len(errors)} violations")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
