#!/usr/bin/env bash
# ghostunnel.sh installs the pinned ghostunnel (a TLS proxy that takes its identity
# from the SPIFFE Workload API and authorizes peers by SPIFFE URI) and spiffe-helper
# (writes SVIDs to files) into a cache directory outside the repository, and prints
# that directory. The end-to-end tests (test/e2e) use both as real data-plane peers.
#
# Neither installs with `go install …@version` (the proxy refuses the version-list
# look-up), so each is built in a throwaway module that requires it. ghostunnel needs
# cgo at this tag, and the checksum database lacks its go-landlock pseudo-version.
# Idempotent: when both binaries of the pinned versions are present it returns at once.
set -euo pipefail

GHOSTUNNEL_VERSION="${GHOSTUNNEL_VERSION:-v1.8.4}"
SPIFFE_HELPER_VERSION="${SPIFFE_HELPER_VERSION:-v0.11.0}"
dir="${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}"
mkdir -p "$dir"

# build NAME MODULE VERSION PACKAGE [ENV…]: builds PACKAGE of MODULE@VERSION into $dir/NAME.
build() {
	local name=$1 mod=$2 ver=$3 pkg=$4
	shift 4
	local stamp="$dir/.$name-$ver"
	if [[ -x "$dir/$name" && -f "$stamp" ]]; then
		return
	fi
	echo "ghostunnel.sh: building $mod@$ver" >&2
	local tmp
	tmp="$(mktemp -d)"
	(
		cd "$tmp"
		cat >go.mod <<MOD
module certmesh.local/tool/$name

go 1.24

require $mod $ver
MOD
		printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >tools.go
		env GOFLAGS=-mod=mod GONOSUMDB=github.com/landlock-lsm/go-landlock "$@" go mod tidy >&2
		env GOFLAGS=-mod=mod GONOSUMDB=github.com/landlock-lsm/go-landlock "$@" go build -trimpath -o "$dir/$name.tmp" "$pkg" >&2
	) || { rm -rf "$tmp"; exit 1; }
	rm -rf "$tmp"
	mv "$dir/$name.tmp" "$dir/$name"
	rm -f "$dir/.$name-"*
	touch "$stamp"
}

build ghostunnel github.com/ghostunnel/ghostunnel "$GHOSTUNNEL_VERSION" github.com/ghostunnel/ghostunnel CGO_ENABLED=1
build spiffe-helper github.com/spiffe/spiffe-helper "$SPIFFE_HELPER_VERSION" github.com/spiffe/spiffe-helper/cmd/spiffe-helper
echo "$dir"
