#!/usr/bin/env bash
# pebble.sh installs the pinned Pebble ACME test CA and pebble-challtestsrv into a
# cache directory outside the repository and prints that directory.
#
# The edge integration tests look for both binaries there (or on PATH) and fail with
# a pointer to this script when they are missing. Idempotent: when both binaries of
# the pinned version are present it returns at once.
set -euo pipefail

PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.1}"
dir="${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}"
stamp="$dir/.pebble-$PEBBLE_VERSION"

mkdir -p "$dir"
if [[ -x "$dir/pebble" && -x "$dir/pebble-challtestsrv" && -f "$stamp" ]]; then
	echo "$dir"
	exit 0
fi

# Run outside any module so the project's go.mod is neither read nor changed.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
	cd "$tmp"
	GOBIN="$dir" GOFLAGS=-mod=mod go install \
		"github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION" \
		"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$PEBBLE_VERSION" >&2
)
rm -f "$dir"/.pebble-*
touch "$stamp"
echo "$dir"
