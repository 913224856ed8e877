#!/usr/bin/env python3
"""Assertions on rendered manifests, for helm-chart/tests/template.sh.

  expect.py RENDERED.yaml 'python expression'

Evaluates the expression over the documents of a `helm template` output; exit 0 when it is
true, 1 (with the expression and the objects found) when false or when it raises. Helpers:

  docs                    every object
  objs(kind)              objects of a kind
  one(kind, name=None)    exactly one object of a kind (and name suffix); raises otherwise
  deploy(track)           the Deployment of a track ("stable" or "canary")
  env(deployment)         the app container's env as {name: value or valueFrom}
  containers(obj)         containers + initContainers of a Deployment or Pod
  pod_spec(obj)           the pod spec of a Deployment or Pod
  restricted(obj)         None when the pod meets the restricted Pod Security Standard, else why
"""

import sys

import yaml


def main():
    path, expr = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    def objs(kind):
        return [d for d in docs if d.get("kind") == kind]

    def one(kind, name=None):
        found = [d for d in objs(kind) if name is None or d["metadata"]["name"].endswith(name)]
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
        return found[0]

    def deploy(track):
        found = [d for d in objs("Deployment") if d["metadata"]["labels"].get("track") == track]
        if len(found) != 1:
            raise AssertionError(f"expected one Deployment with track={track}, found {len(found)}")
        return found[0]

    def pod_spec(obj):
        return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]

    def containers(obj):
        spec = pod_spec(obj)
        return spec.get("initContainers", []) + spec["containers"]

    def env(obj):
        c = pod_spec(obj)["containers"][0]
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}

    def restricted(obj):
        spec = pod_spec(obj)
        psc = spec.get("securityContext", {})
        if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            return "pod seccompProfile is not RuntimeDefault"
        for c in containers(obj):
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                return f"{c['name']}: runAsNonRoot is not true"
            if sc.get("allowPrivilegeEscalation") is not False:
                return f"{c['name']}: allowPrivilegeEscalation is not false"
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                return f"{c['name']}: capabilities do not drop ALL"
            if sc.get("readOnlyRootFilesystem") is not True:
                return f"{c['name']}: root filesystem is writable"
            if sc.get("privileged"):
                return f"{c['name']}: privileged"
        if spec.get("automountServiceAccountToken") is not False:
            return "automountServiceAccountToken is not false"
        return None

    scope = dict(docs=docs, objs=objs, one=one, deploy=deploy, env=env, containers=containers,
                 pod_spec=pod_spec, restricted=restricted)
    try:
        result = eval("(" + expr + "\n)", scope)  # noqa: S307 - test expressions written in template.sh
    except Exception as e:  # noqa: BLE001 - any failure is a failed assertion
        result, why = False, f"{type(e).__name__}: {e}"
    else:
        why = f"got {result!r}"
    if result:
        return 0
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"    assertion failed: {expr}\n    {why}\n    rendered: {kinds or 'nothing'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
