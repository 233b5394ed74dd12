package agent_test

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
)

// TestUpstreamServer runs two `certmesh server` processes: an upstream for
// example.org and a downstream for cluster2.example.org started with
// --upstream and a join token for spiffe://example.org/certmesh/downstream/cluster2.
// The downstream's bundle is the upstream's, and the certificate its own
// listener presents (an SVID it signed) verifies against that bundle.
func TestUpstreamServer(t *testing.T) {
	upDir, downDir := filepath.Join(t.TempDir(), "up"), filepath.Join(t.TempDir(), "down")
	upAddr, downAddr := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	up := startProc(t, "server", "--dir", upDir, "--trust-domain", "example.org", "--listen", upAddr)
	up.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	bundlePEM, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", upDir).Output()
	require.NoError(t, err)
	bundleFile := filepath.Join(t.TempDir(), "upstream-bundle.pem")
	require.NoError(t, os.WriteFile(bundleFile, bundlePEM, 0o644))
	token, err := exec.Command(certmesh(t), "token", "create", "--dir", upDir, "--id", "spiffe://example.org/certmesh/downstream/cluster2", "--ttl", "5m").Output()
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, token, 0o600))

	down := startProc(t, "server", "--dir", downDir, "--trust-domain", "cluster2.example.org", "--listen", downAddr,
		"--upstream", upAddr, "--upstream-token-file", tokenFile, "--upstream-bundle", bundleFile)
	down.WaitLine(t, "certmesh CA for cluster2.example.org", 30*time.Second)
	downBundle, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", downDir).Output()
	require.NoError(t, err)
	require.Equal(t, string(bundlePEM), string(downBundle), "the downstream's bundle is the upstream's")
	_, err = os.Stat(filepath.Join(downDir, "upstream-svid.pem"))
	require.NoError(t, err, "the downstream keeps its identity's SVID")

	roots, err := ca.ParseCertsPEM(bundlePEM)
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", downAddr, &tls.Config{InsecureSkipVerify: true}) // verified below, as an SVID
	require.NoError(t, err)
	chain := conn.ConnectionState().PeerCertificates
	require.NoError(t, conn.Close())
	if n := len(chain); n > 1 && chain[n-1].CheckSignatureFrom(chain[n-1]) == nil {
		chain = chain[:n-1]
	}
	td := spiffeid.RequireTrustDomainFromString("cluster2.example.org")
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots))
	require.NoError(t, err, "the downstream's SVIDs verify against the upstream's bundle")
	require.Equal(t, "spiffe://cluster2.example.org/certmesh/server", id.String())
}
