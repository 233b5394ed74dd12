// Package e2e proves the encrypted path end to end with real processes: curl
// → HTTPS with the edge certificate certmesh obtained from a real Pebble → an
// edge TLS terminator → an mTLS hop between the gateway's and the backend's
// SVIDs (ghostunnel, identities from the SPIFFE Workload API of `certmesh
// dev`, each proxy running as its own uid) → a plain HTTP app on loopback.
//
// Tools come from test/tools/pebble.sh and test/tools/ghostunnel.sh (cache dir
// ${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}); the tests fail, naming the
// script, when one is missing. They run as root: the proxies are started under
// other uids so that attestation, not configuration, decides who they are.
package e2e

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

var (
	latencyOut = flag.String("e2e.latency-out", "", "write the end-to-end latency figures (JSON) to this file")
	latencyN   = flag.Int("e2e.latency-n", 200, "requests per latency series")
	demo       = flag.Bool("e2e.demo", false, "TestDemo: run the chain until interrupted and print a curl line")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(harness.Main(m, harness.CertmeshPkg))
}

// requireRoot fails (never skips) when the test cannot start processes as
// other uids.
func requireRoot(t testing.TB) {
	t.Helper()
	require.Equal(t, 0, os.Getuid(), "test/e2e runs the proxies as separate uids and must run as root")
}

// toolForUids is tool, made reachable by other uids: the tools cache usually
// sits under root's 0700 home, so the binary is linked (or copied) into the
// test's world-readable bin directory.
func toolForUids(t testing.TB, name, script string) string {
	t.Helper()
	src := harness.Tool(t, name, script)
	dst := filepath.Join(harness.BinDir(t), name)
	if harness.FileExists(dst) {
		return dst
	}
	if err := os.Link(src, dst); err == nil {
		return dst
	}
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, data, 0o755))
	return dst
}
