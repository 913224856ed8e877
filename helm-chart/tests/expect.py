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
  np_allows(src, dst, port, protocol="TCP")
                          whether the rendered NetworkPolicies (all in the release namespace) let
                          pod src connect to pod dst on port; a pod is {"ns": name or None for the
                          release's, "labels": {...}, "ports": {"http": 8080}}. Peers by
                          podSelector/namespaceSelector matchLabels only (ipBlock never matches a pod).
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

    def _selects(selector, labels):
        sel = selector or {}
        if set(sel) - {"matchLabels"}:
            raise AssertionError(f"np_allows handles matchLabels only: {sel}")
        return all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())

    def _peer_matches(peer, pod, policy_ns):
        if "ipBlock" in peer:
            return False
        pod_ns = pod.get("ns") or policy_ns
        if "namespaceSelector" in peer:
            ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod_ns})
        else:
            ns_ok = pod_ns == policy_ns
        return ns_ok and _selects(peer.get("podSelector"), pod.get("labels", {}))

    def _rule_allows(rule, peers_key, peer_pod, dst, port, protocol, policy_ns):
        peers = rule.get(peers_key)
        if peers is not None and not any(_peer_matches(p, peer_pod, policy_ns) for p in peers):
            return False
        ports = rule.get("ports")
        if not ports:
            return True
        for p in ports:
            want = p.get("port")
            if isinstance(want, str):
                want = dst.get("ports", {}).get(want)
            if p.get("protocol", "TCP") == protocol and (want is None or want == port):
                return True
        return False

    def np_allows(src, dst, port, protocol="TCP"):
        for direction, pod, peer_pod, key in (("Egress", src, dst, "to"), ("Ingress", dst, src, "from")):
            pols = [n for n in objs("NetworkPolicy") if direction in n["spec"].get("policyTypes", ["Ingress"])
                    and (pod.get("ns") or n["metadata"]["namespace"]) == n["metadata"]["namespace"]
                    and _selects(n["spec"]["podSelector"], pod.get("labels", {}))]
            rules = [r for n in pols for r in (n["spec"].get(direction.lower()) or [])]
            if pols and not any(_rule_allows(r, key, peer_pod, dst, port, protocol, pols[0]["metadata"]["namespace"]) for r in rules):
                return False
        return True

    scope = dict(docs=docs, objs=objs, one=one, deploy=deploy, env=env, containers=containers,
                 pod_spec=pod_spec, restricted=restricted, np_allows=np_allows)
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
