#!/usr/bin/env bash
# Installs berth as systemd services from this checkout. Run as root:
#
#   sudo ./deploy/install.sh
#
# Builds the release binaries with cargo and installs
#   berthd, berth-shim, berth        -> /usr/local/bin
#   deploy/systemd/*.service, .target -> /etc/systemd/system
#   deploy/config.toml                -> /etc/berth/config.toml (only if absent)
# creates the `berth` system group (members may use /run/berth/berth.sock),
# and, when systemd is PID 1, enables and starts berth.target. Running it
# again upgrades: the services restart, containers keep running.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=/usr/local/bin        # the units' ExecStart= expects berthd here
UNIT_DIR=/etc/systemd/system
CONFIG=/etc/berth/config.toml # the units' --config

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "install.sh: cargo not found; install Rust, or keep your PATH: sudo env PATH=\"\$PATH\" $0" >&2
    exit 1
fi

# What the build (protoc) and the services (nft, mkfs.ext4 for size-limited
# volumes, ps for `berth top`) need, on Debian and its derivatives.
if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(protobuf-compiler nftables e2fsprogs procps)
    if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
        echo "== installing ${pkgs[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
fi

echo "== building release binaries"
cargo build --release -p berthd -p berth-shim -p berth --bins

echo "== installing binaries to $BIN_DIR"
install -d "$BIN_DIR"
for b in berthd berth-shim berth; do
    # A new file renamed over the old one: running shims keep their binary
    # (writing into it would fail with "text file busy").
    install -m 0755 "target/release/$b" "$BIN_DIR/.$b.new"
    mv -f "$BIN_DIR/.$b.new" "$BIN_DIR/$b"
done

echo "== installing systemd units to $UNIT_DIR"
install -d "$UNIT_DIR"
for u in deploy/systemd/*.service deploy/systemd/*.target; do
    install -m 0644 "$u" "$UNIT_DIR/$(basename "$u")"
    echo "   $(basename "$u")"
done

install -d -m 0755 "$(dirname "$CONFIG")"
if [ -e "$CONFIG" ]; then
    echo "== keeping $CONFIG (the example is deploy/config.toml)"
else
    echo "== installing $CONFIG"
    install -m 0644 deploy/config.toml "$CONFIG"
fi

if getent group berth >/dev/null; then
    echo "== group berth exists"
else
    echo "== creating the system group berth"
    groupadd --system berth
fi

# systemd is running as the service manager (sd_booted(3)).
if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    echo "== starting berth.target"
    was_active=no
    systemctl is-active --quiet berth.target && was_active=yes
    systemctl daemon-reload
    systemctl enable --now berth.target
    if [ "$was_active" = yes ]; then
        # Upgrade: the new binaries take over; containers keep running.
        systemctl restart berth.target
    fi
    systemctl --no-pager --lines=0 status 'berth-*.service' || true
    cat <<EOF

berth is running. Add users to the group berth to let them use it
(usermod -aG berth NAME, then log in again), or run as root:
    berth ps
Logs: journalctl -u 'berth-*'   Settings: $CONFIG
EOF
else
    cat <<EOF

systemd is not PID 1 here, so the units were installed but not started.
On a host booted with systemd:
    systemctl daemon-reload && systemctl enable --now berth.target
Without systemd, run all services in one process:
    $BIN_DIR/berthd --config $CONFIG
or each one as the units do, in this order (each once the previous serves):
    $BIN_DIR/berthd --config $CONFIG content
    $BIN_DIR/berthd --config $CONFIG snapshots
    $BIN_DIR/berthd --config $CONFIG tasks
    $BIN_DIR/berthd --config $CONFIG network
    $BIN_DIR/berthd --config $CONFIG gateway
EOF
fi
