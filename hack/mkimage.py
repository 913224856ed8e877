#!/usr/bin/env python3
"""Write a single-layer container image as a docker-archive tarball, without Docker.

The result is what `docker save` writes (manifest.json, a config JSON, one layer.tar); both
`ctr -n k8s.io images import` and `docker load` accept it. The layer is reproducible: files are
sorted, owned by root and stamped with mtime 0, so the same inputs give the same image digest.

Usage:
  mkimage.py --root DIR --tag REPO:TAG --out FILE.tar --entrypoint /bin [--cmd ARG ...]
             [--user UID] [--port 8080] [--env KEY=VALUE ...] [--label KEY=VALUE ...]

DIR holds the image's files (e.g. DIR/selfheal-app). /etc/passwd and /etc/group are written with
root, nobody and `nonroot` (uid/gid 65532) so a numeric non-root USER has a name; /tmp, /proc,
/sys and /dev exist as empty directories.
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

PASSWD = (
    b"root:x:0:0:root:/:/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"
)
GROUP = b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="directory whose contents become the image's /")
    p.add_argument("--tag", required=True, help="image reference, e.g. localhost/selfheal-app:dev")
    p.add_argument("--out", required=True, help="tarball to write")
    p.add_argument("--entrypoint", required=True, nargs="+", help="ENTRYPOINT (exec form)")
    p.add_argument("--cmd", nargs="*", default=[], help="CMD (exec form)")
    p.add_argument("--user", default="", help="USER, numeric uid[:gid] (empty = root)")
    p.add_argument("--port", action="append", default=[], help="EXPOSE port (tcp), repeatable")
    p.add_argument("--env", action="append", default=[], help="ENV KEY=VALUE, repeatable")
    p.add_argument("--label", action="append", default=[], help="LABEL KEY=VALUE, repeatable")
    a = p.parse_args(argv)
    if not os.path.isdir(a.root):
        p.error(f"--root {a.root}: not a directory")
    if ":" not in a.tag.rsplit("/", 1)[-1]:
        p.error(f"--tag {a.tag}: needs an explicit :tag")
    for kv in a.env + a.label:
        if "=" not in kv:
            p.error(f"{kv}: expected KEY=VALUE")
    return a


def add_bytes(tar, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    tar.addfile(ti, io.BytesIO(data))


def build_layer(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as lt:
        for d, mode in (("dev", 0o755), ("etc", 0o755), ("proc", 0o755), ("sys", 0o755), ("tmp", 0o1777)):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            lt.addfile(ti)
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in dirs + sorted(files):
                full = os.path.join(dirpath, name)
                arc = os.path.relpath(full, root)
                if arc in ("dev", "etc", "proc", "sys", "tmp", "etc/passwd", "etc/group"):
                    continue
                ti = lt.gettarinfo(full, arcname=arc)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = 0
                if ti.isfile():
                    with open(full, "rb") as f:
                        lt.addfile(ti, f)
                else:
                    lt.addfile(ti)
        add_bytes(lt, "etc/passwd", PASSWD)
        add_bytes(lt, "etc/group", GROUP)
    return buf.getvalue()


def main(argv):
    a = parse_args(argv)
    layer = build_layer(a.root)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": a.entrypoint,
            "Cmd": a.cmd or None,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/"] + a.env,
            "WorkingDir": "/",
            "User": a.user,
            "ExposedPorts": {f"{p}/tcp": {} for p in a.port} or None,
            "Labels": dict(kv.split("=", 1) for kv in a.label) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/mkimage.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    cfg = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_name = diff_id[len("sha256:"):] + "/layer.tar"
    manifest = [{"Config": cfg_name, "RepoTags": [a.tag], "Layers": [layer_name]}]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as t:
        add_bytes(t, cfg_name, cfg)
        add_bytes(t, layer_name, layer)
        add_bytes(t, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, a.out)
    print(f"{a.out} {a.tag} config=sha256:{cfg_name[:-5]} layer={diff_id} size={len(layer)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
