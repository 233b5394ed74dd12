#!/usr/bin/env bash
# Installs every tool certmesh's tests need, pinned, from the Go module proxy
# or Debian's packages. Idempotent and fast when the cache is warm; CI and a
# fresh machine run it through `make test`. Prints nothing but progress.
set -euo pipefail

TOOLS="${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}"
mkdir -p "$TOOLS"
here="$(cd "$(dirname "$0")" && pwd)"

STATICCHECK_VERSION=v0.7.0

install_go_tool() { # name module@version
  local name=$1 pkg=$2
  if [[ -x "$TOOLS/$name" && -f "$TOOLS/.$name.version" && "$(cat "$TOOLS/.$name.version")" == "$pkg" ]]; then
    return
  fi
  echo "install: $pkg"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "$pkg"
  echo "$pkg" > "$TOOLS/.$name.version"
}

apt_install() { # command package
  if command -v "$1" >/dev/null 2>&1; then return; fi
  echo "install: Debian package $2"
  if [[ $(id -u) -ne 0 ]]; then echo "install: need root to apt-get install $2" >&2; exit 1; fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
apt_install openssl openssl
apt_install curl curl
apt_install softhsm2-util softhsm2 # a real PKCS#11 token for ca/pkcs11

for extra in "$here"/pebble.sh "$here"/ghostunnel.sh "$here"/pilot-agent.sh "$here"/kube.sh; do
  if [[ -f "$extra" ]]; then bash "$extra" >/dev/null; fi
done
echo "tools ready in $TOOLS"
