#!/usr/bin/env bash
# pilot-agent.sh builds Istio's pilot-agent — the node agent of every Istio
# sidecar, a real client of istio.v1.auth.IstioCertificateService and a real
# SDS server — into a cache directory outside the repository, and prints that
# directory. test/kube's Istio compatibility test runs it against certmesh.
#
# istio.io/istio publishes no tagged module versions, so the pinned commit's
# pseudo-version is built from a throwaway module that requires it (no replace
# directives are needed at this commit). Cold: about a minute and a half on 2
# cores. pilot-agent renders its Envoy's bootstrap from a template Istio's image
# ships (./var/lib/istio/envoy/envoy_bootstrap_tmpl.json); the template of the
# same commit is copied beside the binary as pilot-agent-envoy_bootstrap.json.
# Idempotent: when the binary of the pinned version is present it returns at once.
set -euo pipefail

ISTIO_VERSION="${ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
dir="${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}"
mkdir -p "$dir"
stamp="$dir/.pilot-agent-$ISTIO_VERSION"

if [[ -x "$dir/pilot-agent" && -f "$dir/pilot-agent-envoy_bootstrap.json" && -f "$stamp" ]]; then
	echo "$dir"
	exit 0
fi
echo "pilot-agent.sh: building istio.io/istio@$ISTIO_VERSION pilot-agent" >&2
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
	cd "$tmp"
	cat >go.mod <<MOD
module certmesh.local/tool/pilot-agent

go 1.24

require istio.io/istio $ISTIO_VERSION
MOD
	printf '//go:build tools\n\npackage tools\n\nimport _ "istio.io/istio/pilot/cmd/pilot-agent"\n' >tools.go
	export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
	go mod tidy >&2
	go build -trimpath -ldflags "-s -w" -o "$dir/pilot-agent.tmp" istio.io/istio/pilot/cmd/pilot-agent >&2
	cp "$(go list -m -f '{{.Dir}}' istio.io/istio)/tools/packaging/common/envoy_bootstrap.json" "$dir/pilot-agent-envoy_bootstrap.json"
)
mv "$dir/pilot-agent.tmp" "$dir/pilot-agent"
rm -f "$dir/.pilot-agent-"*
touch "$stamp"
echo "pilot-agent.sh: built in $((SECONDS - start))s" >&2
echo "$dir"
