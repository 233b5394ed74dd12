#!/bin/sh
# Regenerates the Go code of certmesh's own gRPC services from their .proto
# files under ca/wire (`make proto`).
#
# protoc comes from the system (Debian: apt-get install protobuf-compiler;
# the committed code was made with libprotoc 3.21.12). The two plugins are
# installed at pinned versions into $CERTMESH_TOOLS (default
# ~/.cache/certmesh/bin/protoc-plugins): protoc-gen-go at the version of
# google.golang.org/protobuf in go.mod, protoc-gen-go-grpc at the release
# current with google.golang.org/grpc in go.mod. Bump them with go.mod.
set -eu

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

# The repository's root, so that each file registers under its path from
# there (ca/wire/ackspb/acks.proto, …): unique in the process-wide proto registry.
root=$(cd "$(dirname "$0")/../.." && pwd)
plugins="${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}/protoc-plugins"

command -v protoc >/dev/null 2>&1 || {
	echo "generate.sh: protoc not found (Debian: apt-get install protobuf-compiler)" >&2
	exit 1
}
mkdir -p "$plugins"
GOBIN="$plugins" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$plugins" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

cd "$root"
PATH="$plugins:$PATH" protoc -I . \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	ca/wire/ackspb/acks.proto ca/wire/upstreampb/upstream.proto
echo "generated $(protoc --version) protoc-gen-go $PROTOC_GEN_GO_VERSION protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"
