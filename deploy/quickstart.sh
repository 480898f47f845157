#!/usr/bin/env bash
# Brings berth up on this machine (as root) and runs a container:
# installs the Debian packages berth needs, builds in release mode, starts
# berthd all-in-one, makes a busybox image from Debian's busybox-static with
# `berth image import`, and runs `berth run --rm busybox echo hello from berth`.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${BERTH_ROOT:-/var/lib/berth}
STATE=${BERTH_STATE:-/run/berth}
LOG=${BERTH_DAEMON_LOG:-/var/log/berthd.log}

export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s busybox-static protobuf-compiler e2fsprogs nftables iproute2 >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends busybox-static protobuf-compiler e2fsprogs nftables iproute2 >/dev/null
fi

cargo build --release --bins
BIN=$PWD/target/release

if ! "$BIN/berth" -H "unix://$STATE/berth.sock" version >/dev/null 2>&1; then
    mkdir -p "$(dirname "$LOG")"
    nohup "$BIN/berthd" --root "$ROOT" --state "$STATE" >>"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 200); do
        "$BIN/berth" -H "unix://$STATE/berth.sock" version >/dev/null 2>&1 && break
        sleep 0.05
    done
fi
export BERTH_HOST="unix://$STATE/berth.sock"

# A busybox root filesystem: the static binary plus a link per applet.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$work/rootfs/$(dirname "$applet")"
    ln -sf /bin/busybox "$work/rootfs/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$work/rootfs/etc/passwd"
echo 'root:x:0:' >"$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

"$BIN/berth" image import "$work/busybox.tar" busybox >/dev/null
"$BIN/berth" run --rm busybox echo hello from berth
