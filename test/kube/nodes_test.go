package kube_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/test/harness"
)

// TestNodeEvictionReachesEveryReplica: two replicas run as the shipped
// ServiceAccount (rbac.yaml); a node evicted on one and another banned on
// the other are refused by both, and both records survive in the shared
// ConfigMap.
func TestNodeEvictionReachesEveryReplica(t *testing.T) {
	_, a, b := ackPair(t, false)
	n1 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n1")
	n2 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n2")
	issued := time.Now().Add(-time.Minute)

	_, err := a.SetNode(n1, "evict")
	require.NoError(t, err)
	_, err = b.SetNode(n2, "ban")
	require.NoError(t, err)
	for _, r := range []*testServer{a, b} {
		harness.WaitFor(t, 10*time.Second, "both refusals on every replica", func() bool {
			_, e1 := r.Nodes.Check(n1, issued)
			_, e2 := r.Nodes.Check(n2, issued)
			return e1 != nil && e2 != nil
		})
		_, err := r.Nodes.Check(n1, issued)
		require.ErrorIs(t, err, identity.ErrNodeEvicted)
		_, err = r.Nodes.Check(n2, issued)
		require.ErrorIs(t, err, identity.ErrNodeBanned)
	}
	_, _, err = a.CreateJoinToken(n2, time.Minute)
	require.ErrorIs(t, err, identity.ErrNodeBanned, "no token for a node another replica banned")
}
