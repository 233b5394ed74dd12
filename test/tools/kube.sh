#!/usr/bin/env bash
# kube.sh builds the pinned kube-apiserver and etcd that certmesh's Kubernetes
# integration tests (test/kube/...) run on loopback, and prints the directory
# holding them.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@VERSION` is refused because
# k8s.io/kubernetes uses replace directives, so each binary is built from a
# throwaway module in a temporary directory: kube-apiserver from a module that
# requires k8s.io/kubernetes with the replace block copied from its own go.mod,
# etcd from a module that requires go.etcd.io/etcd/server/v3. The binaries are
# cached outside the repository keyed by version:
#   ${CERTMESH_KUBE_CACHE:-$HOME/.cache/certmesh/kube}/<kube version>/{kube-apiserver,etcd}
# A no-op when both exist. Cold: ~5-7 minutes on 2 cores (see README).
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
staging="v0.${KUBE_VERSION#v1.}"   # v1.37.2 -> v0.37.2
cache="${CERTMESH_KUBE_CACHE:-$HOME/.cache/certmesh/kube}"
dir="$cache/$KUBE_VERSION"
stamp="$dir/.etcd-$ETCD_VERSION"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -f "$stamp" ]]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

build_apiserver() {
	local mod="$tmp/apiserver"
	mkdir -p "$mod"
	cd "$mod"
	echo "kube.sh: fetching k8s.io/kubernetes@$KUBE_VERSION go.mod" >&2
	local gomod
	gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[[ -f "$gomod" ]] || { echo "kube.sh: cannot read k8s.io/kubernetes go.mod" >&2; exit 1; }
	{
		echo "module certmesh.test/kubeapiserver"
		echo
		echo "go $(sed -n 's/^go \(.*\)$/\1/p' "$gomod" | head -1)"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		# The replace block pins every staging module (./staging/src/k8s.io/X)
		# to its published version; the sample modules are not published.
		echo "replace ("
		sed -n '/^replace (/,/^)/p' "$gomod" | sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) => .*$/\1/p' |
			grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$' |
			while read -r m; do echo "	$m => $m $staging"; done
		echo ")"
	} > go.mod
	echo "kube.sh: resolving kube-apiserver dependencies" >&2
	go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
	echo "kube.sh: building kube-apiserver $KUBE_VERSION (~4-5 min cold)" >&2
	local v=k8s.io/component-base/version
	local ldflags="-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
	ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
	go build -trimpath -ldflags "$ldflags" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
}

build_etcd() {
	local mod="$tmp/etcd"
	mkdir -p "$mod"
	cd "$mod"
	printf 'module certmesh.test/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
	echo "kube.sh: resolving etcd $ETCD_VERSION dependencies" >&2
	go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
	echo "kube.sh: building etcd $ETCD_VERSION" >&2
	go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$dir/etcd.tmp" "$dir/etcd"
}

if [[ ! -x "$dir/kube-apiserver" ]]; then (build_apiserver); fi
if [[ ! -x "$dir/etcd" || ! -f "$stamp" ]]; then (build_etcd); fi
rm -f "$dir"/.etcd-*
touch "$stamp"
echo "kube.sh: ready in $((SECONDS - start)) s" >&2
echo "$dir"
