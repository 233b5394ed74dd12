package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/ca/catest"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
	"github.com/certmesh/certmesh/test/kube/kubetest"
)

// ackPeriod is the replicas' summary period in these tests; a summary not
// renewed within 3 periods stops counting.
const ackPeriod = 500 * time.Millisecond

// startAckServer runs a replica as the ServiceAccount of deploy/kubernetes
// (rbac.yaml applied to ns), so the Role is tested with the code that uses it.
func startAckServer(t *testing.T, client kubernetes.Interface, ns, identity string, crash bool) *testServer {
	t.Helper()
	srv, err := server.New(server.Config{
		Dir: filepath.Join(t.TempDir(), identity), TrustDomain: td, Listen: "127.0.0.1:0",
		CA: ca.Config{RotationOverlap: 2 * time.Second},
		Kubernetes: &server.KubernetesConfig{
			Client: client, Namespace: ns, Identity: identity, DisableBundlePublication: true,
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
			AckPeriod: ackPeriod, KeepLeaseOnStop: crash,
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// ackPair starts two replicas as the ServiceAccount and returns them as
// leader and follower.
func ackPair(t *testing.T, crash bool) (ns string, leader, follower *testServer) {
	t.Helper()
	ns = cluster.Namespace(t)
	applyRBAC(t, ns)
	client := kubetest.NewClient(t, cluster.ServiceAccountConfig(t, ns, "certmesh-server"))
	a := startAckServer(t, client, ns, "replica-a", crash)
	b := startAckServer(t, client, ns, "replica-b", crash)
	harness.WaitFor(t, 20*time.Second, "a leader", func() bool { return a.Leader.IsLeader() || b.Leader.IsLeader() })
	if b.Leader.IsLeader() {
		return ns, b, a
	}
	return ns, a, b
}

// liveBundle is the server's current bundle, so that the agent still
// verifies it after the switch to the new root.
type liveBundle struct{ c *ca.CA }

func (l liveBundle) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return l.c.Bundle(), nil
}

// testAgent reports bundle acknowledgements to one replica over mTLS with
// an SVID of the shared CA, as a node agent does, and repeats its last
// report as a heartbeat so it stays live for as long as the test needs.
type testAgent struct {
	conn *grpc.ClientConn
	mu   sync.Mutex
	last wire.AckReport
}

func newTestAgent(t *testing.T, to *testServer) *testAgent {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := to.CA.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/certmesh/node/test"), TTL: time.Hour})
	require.NoError(t, err)
	svid := catest.ToSVID(t, leaf, key)
	tlsCfg := tlsconfig.MTLSClientConfig(svid, liveBundle{to.CA}, tlsconfig.AuthorizeID(wire.ServerID(td)))
	conn, err := grpc.NewClient(to.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	a := &testAgent{conn: conn}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			a.mu.Lock()
			rep := a.last
			a.mu.Unlock()
			if rep.Bundle != "" {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_ = wire.SendAckReport(rctx, conn, rep)
				rcancel()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	return a
}

// report says the agent holds roots with lagging of its 3 watchers behind.
func (a *testAgent) report(t *testing.T, roots [32]byte, lagging int) {
	t.Helper()
	rep := wire.AckReport{Instance: "agent-1", Bundle: hex.EncodeToString(roots[:]), Lagging: lagging, Watchers: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, wire.SendAckReport(ctx, a.conn, rep))
	a.mu.Lock()
	a.last = rep
	a.mu.Unlock()
}

// ackStatus is the part of the admin status these tests read.
type ackStatus struct {
	CA         ca.Status `json:"ca"`
	Kubernetes struct {
		Leader bool                    `json:"leader"`
		Acks   cak8s.AckExchangeStatus `json:"acks"`
	} `json:"kubernetes"`
}

func adminStatus(t *testing.T, s *testServer) ackStatus {
	t.Helper()
	var st ackStatus
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, admin.NewClient(s.AdminSocket()).Status(ctx, &st))
	return st
}

// peerFresh says whether s sees identity's summary, fresh, with agents.
func peerFresh(s *testServer, identity string, agents int) bool {
	var st ackStatus
	if err := admin.NewClient(s.AdminSocket()).Status(context.Background(), &st); err != nil {
		return false
	}
	for _, p := range st.Kubernetes.Acks.Peers {
		if p.Identity == identity && p.Fresh && p.Agents == agents {
			return true
		}
	}
	return false
}

// phaseOf is the rotation phase of authority id on s.
func phaseOf(s *testServer, id string) ca.Phase {
	for _, a := range s.CA.Status().Authorities {
		if a.ID == id {
			return a.Phase
		}
	}
	return ""
}

// heldWith says whether the leader holds a due switch with lagging watchers.
func heldWith(s *testServer, lagging int) func() bool {
	return func() bool { st := s.CA.Status(); return st.WaitingGate && st.Lagging == lagging }
}

// TestAckGateSeesFollowerAgents: an agent connected to the follower lags
// behind the new root; the leader's rotation gate holds the switch until it
// catches up, and the leader's status shows the follower's figure.
func TestAckGateSeesFollowerAgents(t *testing.T) {
	ns, leader, follower := ackPair(t, false)
	agent := newTestAgent(t, follower)
	agent.report(t, wire.BundleDigest(leader.CA.Roots()), 0)
	harness.WaitFor(t, 20*time.Second, "leader sees the follower's agent", func() bool { return peerFresh(leader, follower.Leader.Identity(), 1) })

	prepared, err := leader.CA.Rotate()
	require.NoError(t, err)
	harness.WaitFor(t, 20*time.Second, "follower loads the prepared root", func() bool { return len(follower.CA.Roots()) == 2 })
	newRoots := wire.BundleDigest(leader.CA.Roots())
	require.Equal(t, newRoots, wire.BundleDigest(follower.CA.Roots()))

	// The agent on the follower still holds the old bundle: all its 3
	// watchers count, and the leader holds the switch after the overlap.
	harness.WaitFor(t, 30*time.Second, "leader holds the switch for the follower's agent", heldWith(leader, 3))
	require.Equal(t, ca.PhasePrepared, phaseOf(leader, prepared.ID))
	st := adminStatus(t, leader)
	require.True(t, st.Kubernetes.Leader)
	require.True(t, st.CA.WaitingGate)
	require.Equal(t, 3, st.CA.Lagging, "the leader's figure is cluster-wide")
	require.Zero(t, st.Kubernetes.Acks.Agents, "no agent reports to the leader itself")
	require.Equal(t, 3, st.Kubernetes.Acks.WatchersLagging)
	require.Equal(t, 3, adminStatus(t, follower).Kubernetes.Acks.WatchersLagging, "the follower sees the same cluster-wide figure")

	// It takes the new bundle; one Envoy has not ACKed yet.
	agent.report(t, newRoots, 1)
	harness.WaitFor(t, 30*time.Second, "leader counts the one lagging watcher", heldWith(leader, 1))
	require.Equal(t, ca.PhasePrepared, phaseOf(leader, prepared.ID))

	agent.report(t, newRoots, 0)
	harness.WaitFor(t, 30*time.Second, "signing switches once the follower's agent caught up", func() bool { return phaseOf(leader, prepared.ID) == ca.PhaseActive })
	require.False(t, leader.CA.Status().WaitingGate)

	// A clean stop deletes the follower's summary.
	name := adminStatus(t, follower).Kubernetes.Acks.Lease
	require.Equal(t, cak8s.AckLeasePrefix+follower.Leader.Identity(), name)
	follower.stop()
	_, err = cluster.Client.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "summary %s deleted on a clean stop: %v", name, err)
}

// TestAckGateIgnoresStaleFollower: a follower dies (no clean stop) while its
// agent lags. Its summary stays in the apiserver but stops counting once
// stale, so the leader's rotation is not held forever.
func TestAckGateIgnoresStaleFollower(t *testing.T) {
	ns, leader, follower := ackPair(t, true)
	agent := newTestAgent(t, follower)
	agent.report(t, wire.BundleDigest(leader.CA.Roots()), 0)
	followerID := follower.Leader.Identity()
	harness.WaitFor(t, 20*time.Second, "leader sees the follower's agent", func() bool { return peerFresh(leader, followerID, 1) })

	prepared, err := leader.CA.Rotate()
	require.NoError(t, err)
	harness.WaitFor(t, 30*time.Second, "leader holds the switch for the follower's agent", heldWith(leader, 3))

	follower.stop() // as a crash: neither Lease is released
	harness.WaitFor(t, 30*time.Second, "the dead follower's summary stops holding the switch", func() bool { return phaseOf(leader, prepared.ID) == ca.PhaseActive })

	_, err = cluster.Client.CoordinationV1().Leases(ns).Get(context.Background(), cak8s.AckLeasePrefix+followerID, metav1.GetOptions{})
	require.NoError(t, err, "the summary is still there: it was ignored as stale, not deleted")
	st := adminStatus(t, leader)
	require.Len(t, st.Kubernetes.Acks.Peers, 1)
	require.False(t, st.Kubernetes.Acks.Peers[0].Fresh)
	require.Zero(t, st.CA.Lagging)
}

// TestAckGateCountsWorkloadModeAgents: workload-mode agents (one per pod,
// the pod's ServiceAccount identity) report with their pod-bound token,
// attested by TokenReview against the real apiserver. Two replicas of one
// ServiceAccount fill a slot each; one that lags holds the rotation until it
// catches up; a deleted pod's token is refused.
func TestAckGateCountsWorkloadModeAgents(t *testing.T) {
	ns := cluster.Namespace(t)
	srv := startServer(t, serverOpts{ns: ns, overlap: 2 * time.Second})
	harness.WaitFor(t, 20*time.Second, "the single replica leads", srv.Leader.IsLeader)
	tokens := map[string]string{}
	pods := map[string]*corev1.Pod{}
	for _, name := range []string{"web-0", "web-1"} {
		pods[name] = cluster.Pod(t, ns, name, "web", nil)
		tokens[name] = cluster.ServiceAccountToken(t, ns, "web", audience, pods[name])
	}
	pool := x509.NewCertPool()
	for _, r := range srv.CA.Roots() {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	report := func(pod string, roots [32]byte, lagging int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, wire.AuthorizationKey, "Bearer "+tokens[pod])
		return wire.SendAckReport(ctx, conn, wire.AckReport{Instance: "same-claim", Bundle: hex.EncodeToString(roots[:]), Lagging: lagging, Watchers: 3})
	}

	old := wire.BundleDigest(srv.CA.Roots())
	require.NoError(t, report("web-0", old, 0))
	require.NoError(t, report("web-1", old, 0))
	require.Equal(t, 2, srv.Acks().Agents(), "two pods of one ServiceAccount fill two slots")

	prepared, err := srv.CA.Rotate()
	require.NoError(t, err)
	newRoots := wire.BundleDigest(srv.CA.Roots())
	require.NoError(t, report("web-1", newRoots, 0))
	harness.WaitFor(t, 20*time.Second, "the switch held for web-0's watchers", heldWith(srv, 3))
	require.Equal(t, ca.PhasePrepared, phaseOf(srv, prepared.ID))
	require.NoError(t, report("web-0", newRoots, 0))
	harness.WaitFor(t, 20*time.Second, "the switch once web-0 caught up", func() bool { return phaseOf(srv, prepared.ID) == ca.PhaseActive })

	// A token the CA already attested for reports stands for them up to a
	// minute (a report grants nothing); one it has not seen is reviewed, and
	// a deleted pod's is refused once past the 10 s review cache.
	tokens["web-1"] = cluster.ServiceAccountToken(t, ns, "web", audience, pods["web-1"])
	require.NoError(t, cluster.Client.CoreV1().Pods(ns).Delete(context.Background(), "web-1", metav1.DeleteOptions{}))
	harness.WaitFor(t, 30*time.Second, "the deleted pod's token refused (past the review cache)", func() bool {
		return status.Code(report("web-1", newRoots, 0)) == codes.Unauthenticated
	})
	require.Positive(t, srv.refusals("k8s_pod_gone"))
}
