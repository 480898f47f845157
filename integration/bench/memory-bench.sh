#!/usr/bin/env bash
# Memory that each engine adds per running container: N idle `sleep`
# containers each in berth (berth-shim), containerd (containerd-shim-runc-v2)
# and podman (conmon), measured in the same run. Prints the mean RSS and PSS
# of the per-container helper processes. Needs root.
#
#   sudo integration/bench/memory-bench.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static containerd runc podman"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
# The shim is built static and not position-independent (see
# docs/benchmarks.md): no dynamic loader, no relocated pages, no
# shared-library pages per container.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --release -p berth-shim --target x86_64-unknown-linux-gnu
BIN=$PWD/target/release
SHIM=$PWD/target/x86_64-unknown-linux-gnu/release/berth-shim
work=$(mktemp -d /tmp/berth-mem.XXXXXX)
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
cleanup() {
    set +e
    "$BIN/berth" rm -f $("$BIN/berth" ps -aq) >/dev/null 2>&1
    for i in $(seq "$N"); do ctr -a "$work/ctr.sock" -n bench task kill -s KILL "m$i" >/dev/null 2>&1; done
    sleep 1
    for i in $(seq "$N"); do ctr -a "$work/ctr.sock" -n bench task rm "m$i" >/dev/null 2>&1; ctr -a "$work/ctr.sock" -n bench c rm "m$i" >/dev/null 2>&1; done
    $P rm -af -t 0 >/dev/null 2>&1
    [ -n "${BERTHD:-}" ] && kill "$BERTHD" && wait "$BERTHD" 2>/dev/null
    [ -n "${CTRD:-}" ] && kill "$CTRD" && wait "$CTRD" 2>/dev/null
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/sleep"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

"$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" --shim "$SHIM" >"$work/berthd.log" 2>&1 &
BERTHD=$!
export BERTH_HOST="unix://$work/berth-state/berth.sock"
for _ in $(seq 100); do "$BIN/berth" version >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/berth" image import "$work/busybox.tar" busybox >/dev/null
$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null
$P save --format oci-archive -o "$work/busybox-oci.tar" localhost/busybox:latest >/dev/null
containerd --root "$work/ctr-root" --state "$work/ctr-state" --address "$work/ctr.sock" >"$work/containerd.log" 2>&1 &
CTRD=$!
for _ in $(seq 100); do ctr -a "$work/ctr.sock" version >/dev/null 2>&1 && break; sleep 0.05; done
ctr -a "$work/ctr.sock" -n bench image import --base-name localhost/busybox "$work/busybox-oci.tar" >/dev/null

for i in $(seq "$N"); do
    "$BIN/berth" run -d busybox sleep 100000 >/dev/null
    ctr -a "$work/ctr.sock" -n bench run -d localhost/busybox:latest "m$i" sleep 100000 >/dev/null
    $P run -d --network none --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 localhost/busybox:latest sleep 100000 >/dev/null
done
sleep 2

measure() { # name pattern
    local pids rss=0 pss=0 n=0
    pids=$(pgrep -f "$2" || true)
    for p in $pids; do
        r=$(awk '/^VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0)
        s=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0)
        rss=$((rss + r)); pss=$((pss + s)); n=$((n + 1))
    done
    [ "$n" -gt 0 ] || { echo "| $1 | 0 | - | - |"; return; }
    printf '| %s | %d | %d | %d |\n' "$1" "$n" $((rss / n)) $((pss / n))
}
echo "| per-container process | count | mean RSS (KiB) | mean PSS (KiB) |"
echo "|---|---:|---:|---:|"
measure "berth-shim (static)" "berth-shim --id .* --bundle $work/berth-state"
measure "containerd-shim-runc-v2" "containerd-shim-runc-v2 .*-address $work/ctr.sock"
measure "conmon" "conmon .*$work/podman"
