#!/usr/bin/env bash
# Networking benchmarks (issue 7), release build, one fresh berthd:
#   1. `run --rm busybox true` on the default bridge and with --network none,
#      beside podman (netavark bridge, and none), one hyperfine run;
#   2. network setup per container: 1 and 16 concurrent `run -d` on the
#      bridge vs --network none (the difference is the network's share);
#   3. TCP throughput (iperf3, 10 s): from another host's namespace through a
#      published port and to a --network host server; from the host through
#      the published port and straight to the container's address;
#   4. embedded DNS: queries per second and p50/p99 latency from a container
#      (sequential, and 4 clients at once).
# Needs root. Prints markdown for docs/benchmarks.md.
#
#   sudo integration/bench/net-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-20}

export DEBIAN_FRONTEND=noninteractive
pkgs="busybox-static hyperfine podman iperf3 nftables iproute2"
dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq $pkgs >/dev/null; }

cargo build --release --bins
BIN=$PWD/target/release
work=$(mktemp -d /tmp/berth-netbench.XXXXXX)
tag=$(printf '%04x' $$ | tail -c 4)
NS=bnb-$tag
TABLE=berth-nb-$tag
BR=bnb$tag
cleanup() {
    set +e
    if [ -n "${BERTHD:-}" ]; then
        ids=$("$BIN/berth" ps -aq 2>/dev/null); [ -n "$ids" ] && "$BIN/berth" rm -f $ids >/dev/null 2>&1
        "$BIN/berth" network rm bench >/dev/null 2>&1
        kill "$BERTHD"; wait "$BERTHD" 2>/dev/null
    fi
    $P rm -af >/dev/null 2>&1
    $P rmi -af >/dev/null 2>&1
    ip netns del "$NS" 2>/dev/null
    ip link del "vh$tag" 2>/dev/null
    nft delete table inet "$TABLE" 2>/dev/null
    for l in /sys/class/net/*; do
        [ "$(cat "$l/ifalias" 2>/dev/null)" = "berth:$TABLE" ] && ip link del "$(basename "$l")"
    done
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
P="podman --root $work/podman --runroot $work/podman-run --storage-driver overlay"
PU="--ulimit nofile=20000:20000 --ulimit nproc=1000:1000"

# A busybox rootfs for both engines.
. integration/bench/lib.sh
busybox_tar "$work"

"$BIN/berthd" --root "$work/berth-root" --state "$work/berth-state" \
    --nft-table "$TABLE" --bridge "$BR" --bridge-subnet 10.231.0.0/24 >"$work/berthd.log" 2>&1 &
BERTHD=$!
export BERTH_HOST="unix://$work/berth-state/berth.sock"
for _ in $(seq 100); do "$BIN/berth" version >/dev/null 2>&1 && break; sleep 0.05; done
B="$BIN/berth"
$B image import "$work/busybox.tar" busybox >/dev/null
$P import "$work/busybox.tar" localhost/busybox:latest >/dev/null

echo "### run --rm busybox true"
hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$work/run.md" \
    -n "berth (default bridge)" "$B run --rm busybox true" \
    -n "berth --network none" "$B run --rm --network none busybox true" \
    -n "podman (netavark bridge)" "$P run --rm $PU localhost/busybox:latest true" \
    -n "podman --network none" "$P run --rm --network none $PU localhost/busybox:latest true" >/dev/null
cat "$work/run.md"

echo
echo "### network setup, 1 and 16 concurrent starts (wall time of all starts)"
start_many() { # engine mode count
    local eng=$1 mode=$2 n=$3 t0 t1
    t0=$(date +%s.%N)
    for i in $(seq "$n"); do
        if [ "$eng" = berth ]; then
            $B run -d --network "$mode" busybox sleep 60 >/dev/null &
        else
            $P run -d --network "$mode" $PU localhost/busybox:latest sleep 60 >/dev/null &
        fi
    done
    wait
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.0f", ($2-$1)*1000}'
    if [ "$eng" = berth ]; then $B rm -f $($B ps -aq) >/dev/null; else $P rm -af -t 0 >/dev/null 2>&1; fi
}
echo "| engine | starts | bridge (ms) | none (ms) | network share per container (ms) |"
echo "|---|---|---|---|---|"
for eng in berth podman; do
    for n in 1 16; do
        b=0; z=0
        for r in 1 2 3; do
            b=$((b + $(start_many $eng bridge $n))); z=$((z + $(start_many $eng none $n)))
        done
        b=$((b / 3)); z=$((z / 3))
        echo "| $eng | $n | $b | $z | $(awk -v b=$b -v z=$z -v n=$n 'BEGIN{printf "%.1f", (b-z)/n}') |"
    done
done

echo
echo "### TCP throughput from another host (iperf3 -t 10, one stream)"
# The other host: a namespace joined by a veth pair on 10.232.$x.0/30.
ip netns add "$NS"
ip link add "vh$tag" type veth peer name eth0 netns "$NS"
ip addr add 10.232.0.1/30 dev "vh$tag"; ip link set "vh$tag" up
ip netns exec "$NS" ip addr add 10.232.0.2/30 dev eth0
ip netns exec "$NS" ip link set eth0 up; ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" ip route add default via 10.232.0.1
HOSTMNT="-v /usr:/usr:ro -v /usr/lib:/lib:ro -v /lib64:/lib64:ro"
$B run -d --name ip3 -p 15201:5201 $HOSTMNT busybox /usr/bin/iperf3 -s >/dev/null
CIP=$($B inspect -f '{{.NetworkSettings.IPAddress}}' ip3)
$B run -d --name ip3h --network host $HOSTMNT busybox /usr/bin/iperf3 -s -p 15202 >/dev/null
sleep 1
rate() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
gbps() { ip netns exec "$NS" iperf3 -c "$1" -p "$2" -t 10 -J | rate; }
# Other hosts reach containers only through published ports (no direct
# routing in), so "straight" is measured from the host itself.
pub=$(gbps 10.232.0.1 15201)
host=$(gbps 10.232.0.1 15202)
local_pub=$(iperf3 -c 10.232.0.1 -p 15201 -t 10 -J | rate)
direct=$(iperf3 -c "$CIP" -p 5201 -t 10 -J | rate)
echo "| path | Gbit/s |"
echo "|---|---|"
echo "| other host → published port (10.232.0.1:15201 → DNAT → $CIP:5201) | $pub |"
echo "| other host → --network host (10.232.0.1:15202) | $host |"
echo "| host → published port (10.232.0.1:15201, DNAT in output) | $local_pub |"
echo "| host → straight to the container ($CIP:5201) | $direct |"
echo
echo "other host: published / host networking: $(awk -v a=$pub -v b=$host 'BEGIN{printf "%.1f%%", a/b*100}')"
echo "from the host: published / straight: $(awk -v a=$local_pub -v b=$direct 'BEGIN{printf "%.1f%%", a/b*100}')"

echo
echo "### embedded DNS (user-defined network), from a container"
$B network create --subnet 10.233.0.0/24 bench >/dev/null
for i in 1 2 3; do $B run -d --name web$i --network bench --network-alias svc busybox sleep 600 >/dev/null; done
$B run -d --name dnsc --network bench $HOSTMNT busybox sleep 600 >/dev/null
cat >"$work/dnsload.py" <<'PY'
import socket, struct, sys, time, threading
server, n, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["web1", "web2", "web3", "svc"]
def query(i, name):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    for p in name.split("."):
        q += bytes([len(p)]) + p.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)
lat = []
lock = threading.Lock()
def run(k):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    mine = []
    for i in range(n):
        t = time.perf_counter()
        s.sendto(query(i, names[i % len(names)]), (server, 53))
        r = s.recv(512)
        mine.append(time.perf_counter() - t)
        assert struct.unpack(">H", r[6:8])[0] >= 1, "no answer"
    with lock:
        lat.extend(mine)
t0 = time.perf_counter()
ts = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.perf_counter() - t0
lat.sort()
print("%d | %d | %.0f | %.3f | %.3f" % (clients, len(lat), len(lat) / el,
      lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000))
PY
$B cp "$work/dnsload.py" dnsc:/tmp/dnsload.py
echo "| clients | queries | queries/s | p50 (ms) | p99 (ms) |"
echo "|---|---|---|---|---|"
echo "| $($B exec dnsc /usr/bin/python3 /tmp/dnsload.py 10.233.0.1 5000 1) |"
echo "| $($B exec dnsc /usr/bin/python3 /tmp/dnsload.py 10.233.0.1 2500 4) |"
