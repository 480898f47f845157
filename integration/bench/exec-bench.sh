#!/usr/bin/env bash
# `exec` round trip: `berth exec C true` beside `ctr task exec` (containerd +
# runc) and `podman exec`, on idle busybox containers, in one hyperfine run.
# Needs root.
#
#   sudo integration/bench/exec-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
OUT=${OUT:-/tmp/berth-exec-bench.md}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static hyperfine containerd runc podman"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=$PWD/target/release
work=$(mktemp -d /tmp/berth-exec.XXXXXX)
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
cleanup() {
    set +e
    "$BIN/berth" rm -f bench >/dev/null 2>&1
    ctr -a "$work/ctr.sock" -n bench task kill -s KILL bench >/dev/null 2>&1; sleep 0.5
    ctr -a "$work/ctr.sock" -n bench task rm bench >/dev/null 2>&1
    ctr -a "$work/ctr.sock" -n bench c rm bench >/dev/null 2>&1
    $P rm -f -t 0 bench >/dev/null 2>&1
    [ -n "${BERTHD:-}" ] && kill "$BERTHD" && wait "$BERTHD" 2>/dev/null
    [ -n "${CTRD:-}" ] && kill "$CTRD" && wait "$CTRD" 2>/dev/null
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
for a in sleep true; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

"$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" >"$work/berthd.log" 2>&1 &
BERTHD=$!
export BERTH_HOST="unix://$work/berth-state/berth.sock"
for _ in $(seq 100); do "$BIN/berth" version >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/berth" image import "$work/busybox.tar" busybox >/dev/null
"$BIN/berth" run -d --name bench busybox sleep 100000 >/dev/null

$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null
$P save --format oci-archive -o "$work/busybox-oci.tar" localhost/busybox:latest >/dev/null
$P run -d --name bench --network none --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 localhost/busybox:latest sleep 100000 >/dev/null

containerd --root "$work/ctr-root" --state "$work/ctr-state" --address "$work/ctr.sock" >"$work/containerd.log" 2>&1 &
CTRD=$!
for _ in $(seq 100); do ctr -a "$work/ctr.sock" version >/dev/null 2>&1 && break; sleep 0.05; done
ctr -a "$work/ctr.sock" -n bench image import --base-name localhost/busybox "$work/busybox-oci.tar" >/dev/null
ctr -a "$work/ctr.sock" -n bench run -d localhost/busybox:latest bench sleep 100000 >/dev/null

# ctr needs a fresh exec id per call, so every command runs through a shell
# (hyperfine subtracts the shell's own start-up time).
hyperfine --warmup 3 --runs "$RUNS" --export-markdown "$OUT" \
    -n berth "$BIN/berth exec bench true" \
    -n "ctr (containerd+runc)" "ctr -a $work/ctr.sock -n bench task exec --exec-id e\$RANDOM\$RANDOM bench true" \
    -n podman "$P exec bench true"
cat "$OUT"
