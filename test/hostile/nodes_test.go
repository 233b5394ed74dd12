package hostile

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/certmesh/certmesh/test/harness"
)

// TestAttackEvictedAndBannedNode: `certmesh server` with a real `certmesh
// agent` (node n1), and the test playing node n9 itself: it redeems a join
// token with its own CSR, as an agent does. After `certmesh node evict n9`,
// n9's SVID can neither renew nor impersonate a workload (node_evicted); a
// new token joins it again. After `certmesh node ban n9`, its SVID is
// refused (node_banned), no token can be created for it, and a token made
// before the ban cannot be redeemed. Web, served by n1, renews throughout.
func TestAttackEvictedAndBannedNode(t *testing.T) {
	regs := harness.Registrations(t, "example.org", harness.Workload{ID: webID, UID: uidWeb, Nodes: []string{nodeN1, nodeN9}})
	c := startCA(t, "server", regs)
	bundle := t.TempDir() + "/bundle.pem"
	writeFile(t, bundle, c.cli(t, "ca", "bundle"))
	socket := harness.SocketPath(t, "n1.sock")
	agent := harness.Start(t, harness.Spec{Name: "certmesh agent", Path: c.bin, Args: []string{"agent", "--server", c.addr, "--socket", socket,
		"--join-token", c.token(t, nodeN1), "--trust-domain", "example.org", "--trust-bundle", bundle, "--registrations", regs}})
	agent.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
	webSVID := workloadSVID(t, uidWeb, "unix://"+socket)
	honest := func(step string) {
		t.Helper()
		_, err := sign(context.Background(), c.dial(t, webSVID), "")
		require.NoError(t, err, "web renews %s", step)
	}
	renew := func(node *x509svid.SVID, impersonate string) func() error {
		return func() error {
			_, err := sign(context.Background(), c.dial(t, node), impersonate)
			return err
		}
	}

	n9 := c.join(t, nodeN9)
	require.NoError(t, renew(n9, "")(), "n9 renews before its eviction")
	require.NoError(t, renew(n9, webID)(), "n9 may ask for web's identity before its eviction")

	c.cli(t, "node", "evict", nodeN9)
	c.refused(t, codes.PermissionDenied, "node_evicted", renew(n9, ""))
	c.refused(t, codes.PermissionDenied, "node_evicted", renew(n9, webID))
	honest("after n9's eviction")

	time.Sleep(1100 * time.Millisecond) // an evicted node may join again from the next second
	n9 = c.join(t, nodeN9)
	require.NoError(t, renew(n9, webID)(), "n9 joined again with a new token")

	early := c.token(t, nodeN9)
	c.cli(t, "node", "ban", nodeN9)
	c.refused(t, codes.PermissionDenied, "node_banned", renew(n9, ""))
	c.refused(t, codes.PermissionDenied, "node_banned", renew(n9, webID))
	out, err := c.tryCLI("token", "create", "--id", nodeN9, "--ttl", "5m")
	require.Error(t, err, "a token for a banned node: %s", out)
	require.Contains(t, out, "banned")
	c.refused(t, codes.PermissionDenied, "node_banned", func() error {
		_, err := sign(bearer(early), c.dial(t, nil), "")
		return err
	})
	honest("after n9's ban")
	require.Equal(t, webID, workloadSVID(t, uidWeb, "unix://"+socket).ID.String(), "the honest node n1 still serves web")
	require.NotContains(t, agent.Stderr(), "PermissionDenied", "n1 was never refused")
}
