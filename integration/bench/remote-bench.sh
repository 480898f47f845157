#!/usr/bin/env bash
# Cost of remote management and of tracing, per CLI call: `berth version`
# (one Version RPC and the CLI's start) and `berth ps -a` over the unix
# socket, over TCP with mutual TLS, and over the unix socket with traces
# exported (OTLP/http to a sink on loopback), against one all-in-one berthd
# (release build). Run as root from the repository:
#
#   integration/bench/remote-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-50}
cargo build --release -q -p berthd -p berth -p berth-shim
BIN=$PWD/target/release
work=$(mktemp -d /tmp/berth-remote-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sink=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    kill "$(cat "$work/berthd.pid" 2>/dev/null)" "$(cat "$work/sink.pid" 2>/dev/null)" 2>/dev/null || true
    sleep 1
    nft delete table inet berth-rbench 2>/dev/null || true
    ip link del brbench0 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# Certificates: a CA, a server cert for 127.0.0.1, a client cert.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=bench-ca 2>/dev/null
for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who-key.pem -out $who.csr -subj /CN=$who 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
for who in server client; do
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out $who.pem -days 1 -extfile $who.ext 2>/dev/null
done
cat >sink.py <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 sink.py "$sink" & echo $! >sink.pid
cd - >/dev/null
"$BIN/berthd" --root "$work/root" --state "$work/state" --nft-table berth-rbench --bridge brbench0 \
    --bridge-subnet 10.252.9.0/24 --tcp "127.0.0.1:$port" --tlscacert "$work/ca.pem" \
    --tlscert "$work/server.pem" --tlskey "$work/server-key.pem" >"$work/berthd.log" 2>&1 &
echo $! >"$work/berthd.pid"
for _ in $(seq 100); do "$BIN/berth" -H "unix://$work/state/berth.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
UNIX="$BIN/berth -H unix://$work/state/berth.sock"
TLS="$BIN/berth -H tcp://127.0.0.1:$port --tlsverify --tlscacert $work/ca.pem --tlscert $work/client.pem --tlskey $work/client-key.pem"
OTEL="env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf $UNIX"
for c in version "ps -a"; do
    hyperfine -N --warmup 5 --runs "$RUNS" \
        -n "unix: $c" "$UNIX $c" \
        -n "mTLS tcp: $c" "$TLS $c" \
        -n "unix, CLI exporting traces: $c" "$OTEL $c"
done
