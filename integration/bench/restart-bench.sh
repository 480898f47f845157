#!/usr/bin/env bash
# Start-up after a daemon restart with N running containers: N idle `sleep`
# containers in berth (berthd all-in-one) and in containerd (+ runc), then,
# REPS times for each engine in turn: kill -9 the daemon, start it again and
# time (from just before the start) until
#   - the socket answers (`berth version`, `ctr version`), and
#   - all N containers are listed as running (`berth ps -q | wc -l` = N,
#     `ctr task ls` shows N RUNNING).
# Prints the median of each and berth's time as a fraction of containerd's.
# Needs root.
#
#   sudo integration/bench/restart-bench.sh [N] [REPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200}
REPS=${2:-5}
OUT=${OUT:-/tmp/berth-restart-bench.md}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static containerd runc podman"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}
# Both daemons get the same (the host's hard) open-files limit.
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/berth-restart.XXXXXX)
CNS=restart-bench # containerd namespace
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
B() { "$BIN/berth" "$@"; }
C() { ctr -a "$work/ctr.sock" -n "$CNS" "$@"; }

start_berthd() {
    "$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" >>"$work/berthd.log" 2>&1 &
    BERTHD=$!
}
start_containerd() {
    containerd --root "$work/ctr-root" --state "$work/ctr-state" --address "$work/ctr.sock" \
        >>"$work/containerd.log" 2>&1 &
    CTRD=$!
}
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
wait_up() { # command...: until it succeeds (at most 60 s)
    for _ in $(seq 1200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "not up: $*" >&2; return 1
}

# Processes still running from this benchmark (their command line names
# $work), by pid.
pids_of_work() {
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$work" && echo "${p#/proc/}"
    done
    return 0
}
# Kills what is left in the cgroups named by $1 (relative to each v1
# controller or the cgroup2 root) and removes them.
remove_cgroups() {
    local rel=$1 d
    for d in /sys/fs/cgroup/*/"$rel" /sys/fs/cgroup/"$rel"; do
        [ -d "$d" ] || continue
        xargs -r kill -9 <"$d/cgroup.procs" 2>/dev/null
        for _ in $(seq 50); do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.02; done
    done
}

cleanup() {
    set +e
    # Through the engines first (restarting a daemon killed mid-run).
    if [ -d "$work/berth-state" ]; then
        alive "${BERTHD:-}" || { start_berthd; wait_up B version; }
        ids=$(B ps -aq --no-trunc)
        [ -n "$ids" ] && B rm -f $ids >/dev/null
        kill "$BERTHD"; wait "$BERTHD" 2>/dev/null
    fi
    if [ -d "$work/ctr-state" ]; then
        alive "${CTRD:-}" || { start_containerd; wait_up C version; }
        for i in $(seq "$N"); do C task kill -s KILL "r$i" >/dev/null 2>&1; done
        for i in $(seq "$N"); do C task rm -f "r$i" >/dev/null 2>&1; C c rm "r$i" >/dev/null 2>&1; done
        C image rm localhost/busybox:latest >/dev/null 2>&1
        kill "$CTRD"; wait "$CTRD" 2>/dev/null
    fi
    # Then whatever is left: shims, containers, cgroups, mounts, files.
    for p in $(pids_of_work); do kill -9 "$p" 2>/dev/null; done
    if [ -f "$work/berth-ids" ]; then
        while read -r id; do remove_cgroups "berth/default/$id"; done <"$work/berth-ids"
    fi
    for i in $(seq "$N"); do remove_cgroups "$CNS/r$i"; done
    remove_cgroups "$CNS"
    $P rmi -af >/dev/null 2>&1
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/sleep"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

start_berthd
export BERTH_HOST="unix://$work/berth-state/berth.sock"
wait_up B version
B image import "$work/busybox.tar" busybox >/dev/null
$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null
$P save --format oci-archive -o "$work/busybox-oci.tar" localhost/busybox:latest >/dev/null
start_containerd
wait_up C version
C image import --base-name localhost/busybox "$work/busybox-oci.tar" >/dev/null

echo "starting $N containers in each engine" >&2
for i in $(seq "$N"); do
    B run -d busybox sleep 100000 >>"$work/berth-ids"
    C run -d localhost/busybox:latest "r$i" sleep 100000 >/dev/null
done
[ "$(B ps -q | wc -l)" -eq "$N" ] || { echo "berth: not all $N running" >&2; exit 1; }
[ "$(C task ls | grep -c RUNNING)" -eq "$N" ] || { echo "containerd: not all $N running" >&2; exit 1; }

now() { date +%s%N; }
ms() { echo $((($1 - $2) / 1000000)); }
# until CMD... succeeds, polling as fast as the CLI allows (60 s at most)
poll() {
    local end=$(($(now) + 60000000000))
    until "$@" >/dev/null 2>&1; do
        [ "$(now)" -lt "$end" ] || { echo "timed out: $*" >&2; return 1; }
    done
}
berth_all_running() { [ "$(B ps -q | wc -l)" -eq "$N" ]; }
ctr_all_running() { [ "$(C task ls | grep -c RUNNING)" -eq "$N" ]; }

: >"$work/times"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
    kill -9 "$BERTHD"; wait "$BERTHD" 2>/dev/null || true
    t0=$(now); start_berthd
    poll B version; t1=$(now)
    poll berth_all_running; t2=$(now)
    echo "berth $(ms "$t1" "$t0") $(ms "$t2" "$t0")" >>"$work/times"

    kill -9 "$CTRD"; wait "$CTRD" 2>/dev/null || true
    t0=$(now); start_containerd
    poll C version; t1=$(now)
    poll ctr_all_running; t2=$(now)
    echo "containerd $(ms "$t1" "$t0") $(ms "$t2" "$t0")" >>"$work/times"
    echo "rep $rep: $(tail -2 "$work/times" | tr '\n' ' ')" >&2
done

median() { # engine column
    awk -v e="$1" -v c="$2" '$1 == e { print $c }' "$work/times" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
bv=$(median berth 2); ba=$(median berth 3)
cv=$(median containerd 2); ca=$(median containerd 3)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
{
    echo "| $N running containers, median of $REPS restarts | berthd | containerd | berth / containerd |"
    echo "|---|---:|---:|---:|"
    echo "| kill -9, start → socket answers (\`version\`) | $bv ms | $cv ms | $(ratio "$bv" "$cv") |"
    echo "| kill -9, start → all $N listed running | $ba ms | $ca ms | $(ratio "$ba" "$ca") |"
    echo
    echo "Load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Each restart (ms to version, ms to all running):"
    echo
    awk '{ printf "- %s: %s, %s\n", $1, $2, $3 }' "$work/times"
} | tee "$OUT"
grep -h "recovered tasks\|reconciled containers" "$work/berthd.log" | tail -4 >&2 || true
