#!/bin/sh
# Generates the Python gRPC code of berth's protos into berth_client/_gen.
#
#   clients/python/generate.sh        (PYTHON=... to choose the interpreter)
#
# The generated modules import each other as `berth.<service>.v1`; those
# imports are rewritten to `berth_client._gen.berth.<service>.v1`, so the
# package works without touching sys.path.
#
# Debian's python3-grpc-tools (1.14) bundles protoc 3.5, which rejects proto3
# `optional` fields. When it does, the message modules come from the
# system's protoc (protobuf-compiler, 3.21 on Debian 12) and only the service
# stubs from grpc_tools, fed a copy of the protos with the `optional` labels
# removed (stubs depend on method names and message types only).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
proto_root=$(cd "$here/../../proto" && pwd)
out="$here/berth_client/_gen"

if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import grpc_tools.protoc, grpc' 2>/dev/null; then
            PYTHON=$p
            break
        fi
    done
fi

protos=$(cd "$proto_root" && find berth -name '*.proto' | sort)

rm -rf "$out"
mkdir -p "$out"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cd "$proto_root"
# shellcheck disable=SC2086
if "$PYTHON" -m grpc_tools.protoc -I "$proto_root" --python_out="$out" \
    --grpc_python_out="$out" $protos 2>"$tmp/err"; then
    :
else
    if ! command -v protoc >/dev/null 2>&1; then
        cat "$tmp/err" >&2
        echo "generate.sh: grpc_tools' protoc failed and no system protoc was found" >&2
        exit 1
    fi
    rm -rf "$out"
    mkdir -p "$out"
    # shellcheck disable=SC2086
    protoc -I "$proto_root" --python_out="$out" $protos
    for p in $protos; do
        mkdir -p "$tmp/proto/$(dirname "$p")"
        sed -E 's/^([[:space:]]*)optional[[:space:]]+/\1/' "$p" >"$tmp/proto/$p"
    done
    # shellcheck disable=SC2086
    (cd "$tmp/proto" && "$PYTHON" -m grpc_tools.protoc -I . --grpc_python_out="$out" $protos)
fi

# Type stubs (.pyi) of the message modules, for type checkers and IDEs:
# protoc 3.20+ writes them (Debian 12's does).
if command -v protoc >/dev/null 2>&1 && protoc --help 2>&1 | grep -q -- '--pyi_out'; then
    # shellcheck disable=SC2086
    protoc -I "$proto_root" --pyi_out="$out" $protos
fi

# Packages, and imports rooted in berth_client._gen.
find "$out" -type d -exec sh -c 'for d; do : >"$d/__init__.py"; done' sh {} +
find "$out" \( -name '*.py' -o -name '*.pyi' \) ! -name '__init__.py' -exec sed -i -E \
    -e 's/^from berth\./from berth_client._gen.berth./' \
    -e 's/^import berth\./import berth_client._gen.berth./' {} +

echo "generated $(find "$out" -name '*_pb2*.py' | wc -l) modules in $out"
