#!/usr/bin/env bash
# Benchmark: `berth run --rm --network none busybox true` end to end through
# the CLI, side by side with `ctr run --rm` (containerd + runc, no network)
# and `podman run --rm --network none`, same busybox rootfs, in one hyperfine
# run (the bridge is measured by net-bench.sh). Needs root. Prints the
# hyperfine table; results also go to $OUT (markdown).
#
#   sudo integration/bench/run-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
OUT=${OUT:-/tmp/berth-bench.md}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static hyperfine containerd runc podman"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=$PWD/target/release
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
cleanup() {
    set +e
    [ -n "${BERTHD:-}" ] && kill "$BERTHD" && wait "$BERTHD" 2>/dev/null
    [ -n "${CTRD:-}" ] && kill "$CTRD" && wait "$CTRD" 2>/dev/null
    podman --root "$work/podman" --runroot "$work/podman-run" rmi -af >/dev/null 2>&1
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The same busybox rootfs for everyone.
. integration/bench/lib.sh
busybox_tar "$work"

# berth
"$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" >"$work/berthd.log" 2>&1 &
BERTHD=$!
export BERTH_HOST="unix://$work/berth-state/berth.sock"
for _ in $(seq 100); do "$BIN/berth" version >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/berth" image import "$work/busybox.tar" busybox >/dev/null

# podman (also makes the OCI archive that containerd imports)
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null
$P save --format oci-archive -o "$work/busybox-oci.tar" localhost/busybox:latest >/dev/null

# containerd
containerd --root "$work/ctr-root" --state "$work/ctr-state" --address "$work/ctr.sock" >"$work/containerd.log" 2>&1 &
CTRD=$!
for _ in $(seq 100); do ctr -a "$work/ctr.sock" version >/dev/null 2>&1 && break; sleep 0.05; done
ctr -a "$work/ctr.sock" -n bench image import --base-name localhost/busybox "$work/busybox-oci.tar" >/dev/null

hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$OUT" \
    -n "berth --network none" "$BIN/berth run --rm --network none busybox true" \
    -n "ctr (containerd+runc)" "ctr -a $work/ctr.sock -n bench run --rm localhost/busybox:latest bench-run true" \
    -n "podman" "$P run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 localhost/busybox:latest true"
cat "$OUT"
