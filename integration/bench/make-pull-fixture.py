#!/usr/bin/env python3
"""Writes the pull benchmark's OCI image layout: N gzip layers of SIZE MiB
each (the even ones random bytes, the odd ones text-like), a config and a
manifest.  Usage: make-pull-fixture.py DIR [N] [SIZE_MIB]"""
import gzip, hashlib, io, json, os, random, sys, tarfile

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
size = (int(sys.argv[3]) if len(sys.argv) > 3 else 64) << 20
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


words = [w.encode() for w in "the quick brown fox jumps over a lazy dog while berth pulls layers from a registry".split()]
rng = random.Random(42)
layers, diff_ids = [], []
for i in range(n):
    if i % 2 == 0:
        payload = os.urandom(size)
    else:
        buf = io.BytesIO()
        while buf.tell() < size:
            buf.write(b" ".join(rng.choice(words) for _ in range(12)) + b"\n")
        payload = buf.getvalue()[:size]
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo(f"data/layer{i}.bin")
        info.size = len(payload)
        info.mtime = 1700000000
        t.addfile(info, io.BytesIO(payload))
    raw = tbuf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    d, s = put(gz)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
    print(f"layer {i}: {s >> 20} MiB compressed", file=sys.stderr)

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}).encode()
cd, cs = put(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": layers,
}).encode()
md, ms = put(manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
