#!/usr/bin/env python3
"""Write a single-layer, multi-platform container image as an OCI layout tarball, without Docker.

One tarball holds one image: an OCI image index with one manifest per platform, each with its
own config ("architecture"/"os" of that platform) and one layer. The archive is an OCI image
layout (oci-layout, index.json, blobs/sha256/...) with a docker-archive manifest.json beside it,
as `docker save` (Docker 25+) writes it:
  - `ctr -n k8s.io images import [--platform linux/ARCH]` reads the OCI layout (index.json wins
    over manifest.json) and names the image after index.json's `io.containerd.image.name`;
  - `docker load` (classic store) reads manifest.json, which describes the first platform given.
Every layer is reproducible: files are sorted, owned by root and stamped with mtime 0, so the
same inputs give the same digests.

Usage:
  mkimage.py --root [OS/ARCH=]DIR [--root OS/ARCH=DIR ...] --tag REPO:TAG --out FILE.tar
             --entrypoint /bin [--cmd ARG ...] [--user UID] [--port 8080]
             [--env KEY=VALUE ...] [--label KEY=VALUE ...]
  mkimage.py --inspect FILE.tar     print the image's name and platforms as JSON
  mkimage.py --export OS/ARCH --from FILE.tar --out ONE.tar
                                    copy one platform of FILE.tar into a single-platform tarball
                                    (what `minikube image load` gets: see export_platform)

--root DIR without a platform means linux/amd64. DIR holds that platform's files (e.g.
DIR/selfheal-app); every ELF file in it must be built for that architecture (checked).
/etc/passwd and /etc/group are written with root, nobody and `nonroot` (uid/gid 65532) so a
numeric non-root USER has a name; /tmp, /proc, /sys and /dev exist as empty directories.
"""

import argparse
import hashlib
import io
import json
import os
import re
import struct
import sys
import tarfile

PASSWD = (
    b"root:x:0:0:root:/:/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"
)
GROUP = b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
EPOCH = "1970-01-01T00:00:00Z"

# ELF e_machine of each GOARCH-style architecture the images are built for.
ELF_MACHINE = {"amd64": 62, "arm64": 183, "arm": 40, "386": 3, "ppc64le": 21, "s390x": 22, "riscv64": 243}
PLATFORM_RE = re.compile(r"^(?P<os>[a-z0-9]+)/(?P<arch>[a-z0-9]+)(?:/(?P<variant>v[0-9]+))?$")


def parse_platform(s):
    m = PLATFORM_RE.match(s)
    if not m:
        raise ValueError(f"{s}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")
    p = {"architecture": m["arch"], "os": m["os"]}
    if m["variant"]:
        p["variant"] = m["variant"]
    return p


def platform_name(p):
    return "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)


def parse_root(s):
    head, sep, tail = s.partition("=")
    if sep and PLATFORM_RE.match(head):
        return parse_platform(head), tail
    return {"architecture": "amd64", "os": "linux"}, s


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inspect", metavar="FILE.tar", help="print name and platforms of an image tarball, then exit")
    p.add_argument("--export", metavar="OS/ARCH", help="with --from and --out: write only that platform of --from")
    p.add_argument("--from", dest="src", metavar="FILE.tar", help="the multi-platform tarball --export reads")
    p.add_argument("--root", action="append", default=[], help="[OS/ARCH=]DIR whose contents become that platform's /, repeatable")
    p.add_argument("--tag", help="image reference, e.g. localhost/selfheal-app:dev")
    p.add_argument("--out", help="tarball to write")
    p.add_argument("--entrypoint", nargs="+", help="ENTRYPOINT (exec form)")
    p.add_argument("--cmd", nargs="*", default=[], help="CMD (exec form)")
    p.add_argument("--user", default="", help="USER, numeric uid[:gid] (empty = root)")
    p.add_argument("--port", action="append", default=[], help="EXPOSE port (tcp), repeatable")
    p.add_argument("--env", action="append", default=[], help="ENV KEY=VALUE, repeatable")
    p.add_argument("--label", action="append", default=[], help="LABEL KEY=VALUE, repeatable")
    a = p.parse_args(argv)
    if a.inspect:
        return a
    if a.export or a.src:
        if not (a.export and a.src and a.out):
            p.error("--export needs --from and --out")
        try:
            parse_platform(a.export)
        except ValueError as e:
            p.error(f"--export {e}")
        return a
    for req in ("root", "tag", "out", "entrypoint"):
        if not getattr(a, req):
            p.error(f"--{req} is required")
    roots = []
    for r in a.root:
        plat, d = parse_root(r)
        if not os.path.isdir(d):
            p.error(f"--root {r}: not a directory")
        if any(platform_name(x) == platform_name(plat) for x, _ in roots):
            p.error(f"--root {r}: platform {platform_name(plat)} given twice")
        roots.append((plat, d))
    a.roots = roots
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


def elf_machine(path):
    """e_machine of an ELF file, None when the file is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "<" if head[5] == 1 else ">"
    return struct.unpack(order + "H", head[18:20])[0]


def check_arch(root, plat):
    """Every ELF file under root is built for the platform's architecture."""
    want = ELF_MACHINE.get(plat["architecture"])
    bad = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            got = elf_machine(full)
            if got is not None and want is not None and got != want:
                bad.append(f"{os.path.relpath(full, root)} (ELF machine {got}, want {want})")
    if bad:
        sys.exit(f"mkimage.py: {root} is not {platform_name(plat)}: " + ", ".join(bad))


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


def jbytes(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(digest):
    return "blobs/sha256/" + digest[len("sha256:"):]


def image_config(a, plat, diff_id):
    config = {
        **plat,
        "created": EPOCH,
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
        "history": [{"created": EPOCH, "created_by": "hack/mkimage.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    return config


def write_archive(out, blobs, layout_index, docker_manifest):
    """The tarball, atomically: oci-layout, blobs (sorted), index.json, manifest.json."""
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as t:
        add_bytes(t, "oci-layout", jbytes({"imageLayoutVersion": "1.0.0"}))
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for d, data in sorted(blobs.items()):
            add_bytes(t, blob_path(d), data)
        add_bytes(t, "index.json", jbytes(layout_index))
        add_bytes(t, "manifest.json", jbytes(docker_manifest))
    os.replace(tmp, out)


def write(a):
    blobs = {}  # digest -> bytes, in insertion order
    entries = []  # per platform: manifest descriptor, config digest, layer digest

    def put(data):
        d = sha(data)
        blobs.setdefault(d, data)
        return d

    for plat, root in a.roots:
        check_arch(root, plat)
        layer = build_layer(root)
        layer_d = put(layer)
        cfg = jbytes(image_config(a, plat, layer_d))
        cfg_d = put(cfg)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cfg_d, "size": len(cfg)},
            "layers": [{"mediaType": MT_LAYER, "digest": layer_d, "size": len(layer)}],
        }
        man = jbytes(manifest)
        man_d = put(man)
        entries.append(({"mediaType": MT_MANIFEST, "digest": man_d, "size": len(man), "platform": plat}, cfg_d, layer_d))

    index = jbytes({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [e[0] for e in entries]})
    index_d = put(index)
    tag = a.tag.rsplit(":", 1)[1]
    layout_index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_INDEX,
            "digest": index_d,
            "size": len(index),
            "annotations": {"io.containerd.image.name": a.tag, "org.opencontainers.image.ref.name": tag},
        }],
    }
    _, cfg_d, layer_d = entries[0]
    docker_manifest = [{"Config": blob_path(cfg_d), "RepoTags": [a.tag], "Layers": [blob_path(layer_d)]}]

    write_archive(a.out, blobs, layout_index, docker_manifest)
    plats = ",".join(platform_name(e[0]["platform"]) for e in entries)
    print(f"{a.out} {a.tag} index={index_d} platforms={plats} size={os.path.getsize(a.out)}")


def inspect(path):
    """The image's name, index digest (null for an --export tarball) and, per platform, the
    manifest and its config's platform; docker_load: the platform manifest.json names."""
    with tarfile.open(path) as t:
        def read(name):
            return t.extractfile(name).read()

        layout = json.loads(read("index.json"))
        (top,) = layout["manifests"]
        # A single-platform tarball (--export) names its manifest directly: no index.
        single = top.get("mediaType") == MT_MANIFEST
        manifests = [top] if single else json.loads(read(blob_path(top["digest"])))["manifests"]
        out = {"name": top.get("annotations", {}).get("io.containerd.image.name"), "index": None if single else top["digest"], "platforms": []}
        for m in manifests:
            manifest = json.loads(read(blob_path(m["digest"])))
            config = json.loads(read(blob_path(manifest["config"]["digest"])))
            out["platforms"].append({
                "platform": platform_name(m["platform"]),
                "manifest": m["digest"],
                "config_os": config.get("os"),
                "config_architecture": config.get("architecture"),
                "layers": [layer["digest"] for layer in manifest["layers"]],
            })
        (docker,) = json.loads(read("manifest.json"))
        config = json.loads(read(docker["Config"]))
        out["docker_load"] = f"{config.get('os')}/{config.get('architecture')}"
    print(json.dumps(out, indent=2))


def export_platform(src, platform, out):
    """Write one platform of src's image index as a single-platform tarball.

    `minikube image load FILE` copies the file onto the node and runs the node runtime's own
    loader on it: `ctr -n=k8s.io images import FILE` (containerd: OCI layout, the node's default
    platform) or `docker load` (Docker: manifest.json, which names one platform only, the first
    one built). With only the node's platform in the file both read the same, right image.
    index.json names the platform's manifest directly, as `docker save` of one image does.
    """
    want = platform_name(parse_platform(platform))
    with tarfile.open(src) as t:
        def read(digest):
            return t.extractfile(blob_path(digest)).read()

        if "index.json" not in t.getnames():
            sys.exit(f"mkimage.py: {src} is no OCI image layout (no index.json): rebuild it with hack/image.sh")
        (top,) = json.loads(t.extractfile("index.json").read())["manifests"]
        if top.get("mediaType") != MT_INDEX:
            sys.exit(f"mkimage.py: {src} holds no image index (mediaType {top.get('mediaType')}): nothing to export from")
        index = json.loads(read(top["digest"]))
        have = [platform_name(m["platform"]) for m in index["manifests"]]
        matches = [m for m in index["manifests"] if platform_name(m["platform"]) == want]
        if not matches:
            sys.exit(f"mkimage.py: {src} has no {want} image (it has {', '.join(have)}); hack/image.sh --platforms builds linux/amd64 and linux/arm64")
        desc = matches[0]
        manifest_bytes = read(desc["digest"])
        manifest = json.loads(manifest_bytes)
        blobs = {desc["digest"]: manifest_bytes, manifest["config"]["digest"]: read(manifest["config"]["digest"])}
        for layer in manifest["layers"]:
            blobs[layer["digest"]] = read(layer["digest"])
    config = json.loads(blobs[manifest["config"]["digest"]])
    got = f"{config.get('os')}/{config.get('architecture')}"
    if got != want:
        sys.exit(f"mkimage.py: {src}: the {want} manifest's config says {got}")
    annotations = top.get("annotations", {})
    name = annotations.get("io.containerd.image.name")
    if not name:
        sys.exit(f"mkimage.py: {src}: index.json names no image (io.containerd.image.name)")
    layout_index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": desc.get("mediaType", MT_MANIFEST),
            "digest": desc["digest"],
            "size": desc["size"],
            "platform": desc["platform"],
            "annotations": annotations,
        }],
    }
    docker_manifest = [{
        "Config": blob_path(manifest["config"]["digest"]),
        "RepoTags": [name],
        "Layers": [blob_path(layer["digest"]) for layer in manifest["layers"]],
    }]
    write_archive(out, blobs, layout_index, docker_manifest)
    print(f"{out} {name} manifest={desc['digest']} platforms={want} size={os.path.getsize(out)}")


def main(argv):
    a = parse_args(argv)
    if a.inspect:
        inspect(a.inspect)
    elif a.export:
        export_platform(a.src, a.export, a.out)
    else:
        write(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
