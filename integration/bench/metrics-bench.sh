#!/usr/bin/env bash
# Cost of one Prometheus scrape with N running containers: berthd
# (--metrics-addr, all-in-one) beside containerd's own metrics endpoint
# ([metrics] address: its cgroups monitor reports every task), both with N
# idle `sleep` containers without network (berth --network none; `ctr run`
# gives a namespace with only lo). For each N in COUNTS, containers are added
# until N run in each engine, then hyperfine times `curl` fetching the whole
# page (uncompressed) from each. Needs root.
#
#   sudo integration/bench/metrics-bench.sh ["COUNTS"] [RUNS]
#   sudo integration/bench/metrics-bench.sh "1 10 100" 30
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNTS=${1:-"1 10 100"}
RUNS=${2:-30}
OUT=${OUT:-/tmp/berth-metrics-bench.md}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static containerd runc podman hyperfine curl"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BPORT=$(free_port)
CPORT=$(free_port)

work=$(mktemp -d /tmp/berth-metrics.XXXXXX)
CNS=metrics-bench # containerd namespace
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
B() { "$BIN/berth" "$@"; }
C() { ctr -a "$work/ctr.sock" -n "$CNS" "$@"; }
wait_up() { # command...: until it succeeds (at most 60 s)
    for _ in $(seq 1200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "not up: $*" >&2; return 1
}
pids_of_work() {
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$work" && echo "${p#/proc/}"
    done
    return 0
}
remove_cgroups() {
    local rel=$1 d
    for d in /sys/fs/cgroup/*/"$rel" /sys/fs/cgroup/"$rel"; do
        [ -d "$d" ] || continue
        xargs -r kill -9 <"$d/cgroup.procs" 2>/dev/null
        for _ in $(seq 50); do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.02; done
    done
}
started=0
cleanup() {
    set +e
    if [ -n "${BERTHD:-}" ]; then
        ids=$(B ps -aq --no-trunc)
        [ -n "$ids" ] && B rm -f $ids >/dev/null
        kill "$BERTHD"; wait "$BERTHD" 2>/dev/null
    fi
    if [ -n "${CTRD:-}" ]; then
        for i in $(seq "$started"); do C task kill -s KILL "m$i" >/dev/null 2>&1; done
        for i in $(seq "$started"); do C task rm -f "m$i" >/dev/null 2>&1; C c rm "m$i" >/dev/null 2>&1; done
        C image rm localhost/busybox:latest >/dev/null 2>&1
        kill "$CTRD"; wait "$CTRD" 2>/dev/null
    fi
    for p in $(pids_of_work); do kill -9 "$p" 2>/dev/null; done
    for i in $(seq "$started"); do remove_cgroups "$CNS/m$i"; done
    remove_cgroups "$CNS"
    $P rmi -af >/dev/null 2>&1
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    nft delete table inet berth-mbench 2>/dev/null
    ip link del bmbench0 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/sleep"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

# berthd on its own nftables table and bridge, so that it does not meet
# another berthd on this machine.
BERTH_NFT_TABLE=berth-mbench BERTH_BRIDGE=bmbench0 \
    "$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" \
    --metrics-addr "127.0.0.1:$BPORT" >"$work/berthd.log" 2>&1 &
BERTHD=$!
export BERTH_HOST="unix://$work/berth-state/berth.sock"
wait_up B version
B image import "$work/busybox.tar" busybox >/dev/null
$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null
$P save --format oci-archive -o "$work/busybox-oci.tar" localhost/busybox:latest >/dev/null
cat >"$work/containerd.toml" <<EOF
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[metrics]
  address = "127.0.0.1:$CPORT"
EOF
containerd --config "$work/containerd.toml" --root "$work/ctr-root" --state "$work/ctr-state" \
    --address "$work/ctr.sock" >"$work/containerd.log" 2>&1 &
CTRD=$!
wait_up C version
C image import --base-name localhost/busybox "$work/busybox-oci.tar" >/dev/null

BURL="http://127.0.0.1:$BPORT/metrics"
CURL="http://127.0.0.1:$CPORT/v1/metrics"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$OUT"
for n in $COUNTS; do
    while [ "$started" -lt "$n" ]; do
        started=$((started + 1))
        B run -d --network none busybox sleep 100000 >/dev/null
        C run -d localhost/busybox:latest "m$started" sleep 100000 >/dev/null
    done
    [ "$(B ps -q | wc -l)" -eq "$n" ] || { echo "berth: not all $n running" >&2; exit 1; }
    [ "$(C task ls | grep -c RUNNING)" -eq "$n" ] || { echo "containerd: not all $n running" >&2; exit 1; }
    sleep 1
    bs=$(curl -s "$BURL" | grep -vc '^#'); bb=$(curl -s "$BURL" | wc -c)
    cs=$(curl -s "$CURL" | grep -vc '^#'); cb=$(curl -s "$CURL" | wc -c)
    # curl's own start and a request answered without work (berth's 404)
    # set the floor: subtract it for the cost of the scrape itself.
    hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$work/h.md" \
        -n "berth ($n containers)" "curl -sf -o /dev/null $BURL" \
        -n "containerd ($n containers)" "curl -sf -o /dev/null $CURL" \
        -n "curl alone (a 404)" "curl -s -o /dev/null http://127.0.0.1:$BPORT/none" >&2
    {
        echo "#### $n running containers"
        echo
        cat "$work/h.md"
        echo
        echo "Page: berth $bs samples, $bb bytes; containerd $cs samples, $cb bytes." \
            "berth_scrape_duration_seconds: $(curl -s "$BURL" | awk '/^berth_scrape_duration_seconds/ { print $2 }')."
        echo
    } | tee -a "$OUT"
done
echo "Load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)." | tee -a "$OUT"
