#!/usr/bin/env bash
# Pull of a multi-layer image (8 gzip layers of 64 MiB: half random, half
# text-like) from Debian's docker-registry on loopback: `berth pull` beside
# `ctr images pull --plain-http` (containerd, unpacking to overlayfs) and
# `podman pull`, each with a fresh root per run, in the same run. Needs root.
#
#   sudo integration/bench/pull-bench.sh [RUNS] [LAYERS] [LAYER_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
LAYERS=${2:-8}
MIB=${3:-64}

export DEBIAN_FRONTEND=noninteractive
pkgs="docker-registry skopeo containerd runc podman"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=$PWD/target/release
work=$(mktemp -d /tmp/berth-pull.XXXXXX)
cleanup() {
    set +e
    [ -n "${BERTHD:-}" ] && kill "$BERTHD" 2>/dev/null && wait "$BERTHD" 2>/dev/null
    [ -n "${CTRD:-}" ] && kill "$CTRD" 2>/dev/null && wait "$CTRD" 2>/dev/null
    [ -n "${REG:-}" ] && kill "$REG" 2>/dev/null && wait "$REG" 2>/dev/null
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
REG=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

echo "== fixture: $LAYERS layers of $MIB MiB" >&2
python3 integration/bench/make-pull-fixture.py "$work/layout" "$LAYERS" "$MIB"
skopeo copy --preserve-digests --dest-tls-verify=false "oci:$work/layout" "docker://127.0.0.1:$port/bench/big:1" >/dev/null
IMAGE=127.0.0.1:$port/bench/big:1
rm -rf "$work/layout"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Where berth's time went, summed over the layers from berthd's log: the
# gateway's download loop, berth-content's ingest, berth-snapshots' unpack.
# The phases of one layer overlap across services and layers run 3 at a
# time, so the sums exceed the wall time.
phases() {
    python3 - "$1" <<'PY'
import re, sys, collections
sums = collections.defaultdict(lambda: collections.Counter())
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    for msg in ("layer download ended", "committing blob", "applied layer"):
        if msg in line:
            for k, v in re.findall(r"(\w+_ms)=(\d+)", line):
                sums[msg][k] += int(v)
            sums[msg]["n"] += 1
for msg, c in sums.items():
    n = c.pop("n")
    print(f"  {msg} ({n}x): " + ", ".join(f"{k[:-3]} {v/1000:.2f}s" for k, v in c.items()))
PY
}

results=()
for run in $(seq "$RUNS"); do
    # berth, fresh root and state.
    rm -rf "$work/b"; mkdir -p "$work/b"
    "$BIN/berthd" --root "$work/b/root" --state "$work/b/state" >"$work/berthd.log" 2>&1 &
    BERTHD=$!
    export BERTH_HOST="unix://$work/b/state/berth.sock"
    for _ in $(seq 100); do "$BIN/berth" version >/dev/null 2>&1 && break; sleep 0.05; done
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); "$BIN/berth" pull -q "$IMAGE" >/dev/null; t1=$(now)
    b=$(elapsed "$t0" "$t1")
    phases "$work/berthd.log" >&2
    kill "$BERTHD"; wait "$BERTHD" 2>/dev/null || true; BERTHD=
    grep " $work/b" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work/b"

    # containerd, fresh root.
    rm -rf "$work/c"; mkdir -p "$work/c"
    containerd --root "$work/c/root" --state "$work/c/state" --address "$work/c/ctr.sock" >"$work/containerd.log" 2>&1 &
    CTRD=$!
    for _ in $(seq 100); do ctr -a "$work/c/ctr.sock" version >/dev/null 2>&1 && break; sleep 0.05; done
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now); ctr -a "$work/c/ctr.sock" -n bench images pull --plain-http "$IMAGE" >/dev/null; t1=$(now)
    c=$(elapsed "$t0" "$t1")
    kill "$CTRD"; wait "$CTRD" 2>/dev/null || true; CTRD=
    grep " $work/c" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work/c"

    # podman, fresh root.
    rm -rf "$work/p"; mkdir -p "$work/p"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now)
    podman --root "$work/p/root" --runroot "$work/p/run" --storage-driver overlay \
        pull -q --tls-verify=false "$IMAGE" >/dev/null
    t1=$(now)
    p=$(elapsed "$t0" "$t1")
    podman --root "$work/p/root" --runroot "$work/p/run" --storage-driver overlay rmi -a -f >/dev/null 2>&1 || true
    grep " $work/p" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work/p"

    echo "run $run: berth ${b}s  containerd ${c}s  podman ${p}s" >&2
    results+=("$b $c $p")
done

printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
b, c, p = (statistics.median(col) for col in zip(*rows))
print("| engine | median pull time (s) | vs containerd |")
print("|---|---:|---:|")
print(f"| berth | {b:.2f} | {b/c:.2f}x |")
print(f"| containerd (ctr images pull --plain-http) | {c:.2f} | 1.00x |")
print(f"| podman pull | {p:.2f} | {p/c:.2f}x |")
load = open("/proc/loadavg").read().split()[0]
print(f"load average: {load}")
'
