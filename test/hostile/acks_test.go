package hostile

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

// TestAttackForgedBundleAcks: reports to certmesh.v1.BundleAcks that would
// hold a root rotation (a stale bundle with lagging watchers) or open it
// early (negative counts). From a workload's SVID: PermissionDenied,
// ack_not_agent; without a client certificate: ack_no_credential; from a node with
// negative counts: InvalidArgument, bad_ack_report. An honest node's report
// is taken after each, the rotation is not held by the refused ones, and
// when a node does lag, `certmesh ca rotate --force` switches all the same.
//
// The reasons are those of ca/service/errors.go in the tree tested.
func TestAttackForgedBundleAcks(t *testing.T) {
	c := startCA(t, "server", "", "--rotation-overlap", "2s")
	web := c.join(t, webID)
	node := c.join(t, nodeN9)
	webConn, nodeConn, anonConn := c.dial(t, web), c.dial(t, node), c.dial(t, nil)
	stale := bundleDigest(t, nodeConn)
	start := c.authorities(t)
	require.Len(t, start, 1)
	var first string
	for id := range start {
		first = id
	}

	c.cli(t, "ca", "rotate")
	current := bundleDigest(t, nodeConn)
	require.NotEqual(t, stale, current, "the prepared root is in the bundle")
	honest := func(step string) {
		t.Helper()
		require.NoError(t, report(nodeConn, wire.AckReport{Instance: "n9", Bundle: current, Watchers: 3}), "an honest node's report %s", step)
	}
	holdIt := wire.AckReport{Instance: "n9", Bundle: stale, Lagging: 1000, Watchers: 1000}
	c.refused(t, codes.PermissionDenied, "ack_not_agent", func() error { return report(webConn, holdIt) })
	honest("after a workload's report")
	c.refused(t, codes.PermissionDenied, "ack_no_credential", func() error { return report(anonConn, holdIt) })
	honest("after a report without a client certificate")
	c.refused(t, codes.InvalidArgument, "bad_ack_report", func() error {
		return report(nodeConn, wire.AckReport{Instance: "n9", Bundle: current, Lagging: -5, Watchers: 0})
	})
	honest("after negative counts")

	harness.Poll{Timeout: 20 * time.Second, Every: 250 * time.Millisecond, Detail: c.String}.WaitFor(t, "the new root to sign, not held by the refused reports", func() bool {
		return c.authorities(t)[first] != "active"
	})
	require.Len(t, c.authorities(t), 2)

	// A node that really lags holds the next switch; the operator forces it.
	c.cli(t, "ca", "rotate")
	require.NoError(t, report(nodeConn, wire.AckReport{Instance: "n9", Bundle: current, Lagging: 0, Watchers: 1}), "n9 holds the bundle before this rotation")
	time.Sleep(4 * time.Second) // past the 2 s overlap: the lagging node holds the switch
	third := c.prepared(t)
	require.NotEmpty(t, third, "the third root is held by the lagging node: %v", c.authorities(t))
	c.cli(t, "ca", "rotate", "--force")
	require.Equal(t, "active", c.authorities(t)[third])
	honest("after the forced switch")
}

// report sends a bundle acknowledgement report over conn.
func report(conn *grpc.ClientConn, rep wire.AckReport) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return wire.SendAckReport(ctx, conn, rep)
}

// bundleDigest is the digest of the X.509 bundle the CA streams to agents.
func bundleDigest(t *testing.T, conn *grpc.ClientConn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
	require.NoError(t, err)
	resp, err := stream.Recv()
	require.NoError(t, err)
	d := wire.DigestDER(resp.GetBundles()[td.IDString()])
	return hex.EncodeToString(d[:])
}

// authorities is each authority's phase, by ID, from `certmesh ca inspect`.
func (c *caProc) authorities(t *testing.T) map[string]string {
	t.Helper()
	var st struct {
		Authorities []struct{ ID, Phase string }
	}
	require.NoError(t, json.Unmarshal([]byte(c.cli(t, "ca", "inspect", "-o", "json")), &st))
	phases := map[string]string{}
	for _, a := range st.Authorities {
		phases[a.ID] = a.Phase
	}
	return phases
}

// prepared is the ID of the authority in phase prepared ("" if none).
func (c *caProc) prepared(t *testing.T) string {
	t.Helper()
	for id, phase := range c.authorities(t) {
		if phase == "prepared" {
			return id
		}
	}
	return ""
}
