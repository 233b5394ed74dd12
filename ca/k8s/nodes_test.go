package k8s

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/identity"
)

// TestNodeRegisterSharedByReplicas: an eviction on one replica is refused
// on another once it has followed the ConfigMap, and records of different
// nodes written by different replicas all survive.
func TestNodeRegisterSharedByReplicas(t *testing.T) {
	cs := fake.NewClientset()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	replica := func() (*identity.Nodes, *NodeStore) {
		st := &NodeStore{Client: cs, Namespace: "certmesh"}
		n, err := identity.NewNodes(identity.NodesConfig{TrustDomain: td, Clock: clk, Store: st})
		require.NoError(t, err)
		return n, st
	}
	a, _ := replica()
	b, bStore := replica()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	following := make(chan struct{}, 1)
	go func() {
		done <- bStore.Watch(ctx, func() {
			_ = b.Reload()
			select {
			case following <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	select {
	case <-following:
	case <-time.After(10 * time.Second):
		t.Fatal("replica b never followed the register")
	}

	n1 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n1")
	n2 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n2")
	issued := clk.Now()
	clk.SetTime(issued.Add(time.Minute))
	_, err := a.Evict(n1)
	require.NoError(t, err)
	_, err = b.Ban(n2)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		_, err := b.Check(n1, issued)
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "replica b refuses what replica a evicted")
	_, err = b.Check(n1, issued)
	require.ErrorIs(t, err, identity.ErrNodeEvicted)

	require.NoError(t, a.Reload())
	require.True(t, a.Banned(n2), "replica a sees b's ban: both records survived")
	again, _ := replica()
	require.Len(t, again.List(), 2, "a restarted replica loads both")
}
