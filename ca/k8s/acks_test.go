package k8s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca/service"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

const ackNS = "certmesh"

func ackDigest(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func ackHex(s string) string { d := ackDigest(s); return hex.EncodeToString(d[:]) }

// fakeAcks is a replica's registry, reduced to its summary.
type fakeAcks struct {
	mu sync.Mutex
	s  service.AckSummary
}

func (f *fakeAcks) set(s service.AckSummary) { f.mu.Lock(); f.s = s; f.mu.Unlock() }

func (f *fakeAcks) Summary() service.AckSummary { f.mu.Lock(); defer f.mu.Unlock(); return f.s }

func (f *fakeAcks) Gate(roots [32]byte) (bool, int) { return f.Summary().Gate(roots) }

// holding is a summary of agents that all hold bundle with lagging
// watchers among watchers.
func holding(bundle string, agents, watchers, lagging int) service.AckSummary {
	return service.AckSummary{Bundles: map[string]service.AckTotals{
		ackHex(bundle): {Agents: agents, Watchers: watchers, Lagging: lagging, Behind: max(watchers, agents)},
	}}
}

// newClientset is a fake apiserver that, like the real one, gives every
// written object a new resourceVersion (the gate relies on it to tell a
// renewal from a relist).
func newClientset() *fake.Clientset {
	cs := fake.NewClientset()
	var rv atomic.Int64
	cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if w, ok := a.(interface{ GetObject() runtime.Object }); ok && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			if m, err := meta.Accessor(w.GetObject()); err == nil {
				m.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
			}
		}
		return false, nil, nil
	})
	return cs
}

func newTestExchange(t *testing.T, identity string, local AckSource) (*AckExchange, *clocktesting.FakeClock, *fake.Clientset) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	cs := newClientset()
	x, err := NewAckExchange(AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: identity, Local: local, Period: time.Second, Clock: clk})
	require.NoError(t, err)
	return x, clk, cs
}

// peerLease is another replica's summary Lease at resourceVersion rv.
func peerLease(t *testing.T, identity, rv string, s service.AckSummary) *coordinationv1.Lease {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: AckLeasePrefix + identity, Namespace: ackNS, ResourceVersion: rv,
			Labels: map[string]string{AckSummaryKey: AckSummaryVersion}, Annotations: map[string]string{AckSummaryKey: string(b)}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &identity},
	}
}

func synced(x *AckExchange) { x.hasSynced = func() bool { return true } }

func TestNewAckExchangeChecksConfig(t *testing.T) {
	cs := newClientset()
	local := &fakeAcks{}
	cases := []struct {
		name string
		cfg  AckExchangeConfig
	}{
		{"no client", AckExchangeConfig{Namespace: ackNS, Identity: "a", Local: local}},
		{"no local", AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: "a"}},
		{"stale too soon", AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: "a", Local: local, Period: time.Second, StaleAfter: time.Second}},
		{"negative", AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: "a", Local: local, Period: -time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewAckExchange(tc.cfg)
			require.Error(t, err)
		})
	}
	x, err := NewAckExchange(AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: "replica-a", Local: local})
	require.NoError(t, err)
	require.Equal(t, "certmesh-acks-replica-a", x.LeaseName())
	require.Equal(t, DefaultAckPeriod, x.cfg.Period)
	require.Equal(t, 3*DefaultAckPeriod, x.cfg.StaleAfter)
}

func TestAckLeaseName(t *testing.T) {
	cases := []struct{ identity, want string }{
		{"certmesh-server-7d9f-x2x", "certmesh-acks-certmesh-server-7d9f-x2x"},
		{"node1.example.org", "certmesh-acks-node1.example.org"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, ackLeaseName(tc.identity))
	}
	// Not a valid name: made one, and two such identities stay apart.
	for _, odd := range []string{"MyLaptop", "Pod_A", "-", strings.Repeat("a", 300), "日本"} {
		name := ackLeaseName(odd)
		require.Empty(t, validation.IsDNS1123Subdomain(name), "%q -> %q", odd, name)
		require.NotEqual(t, ackLeaseName(strings.ToLower(odd)+"x"), name)
	}
	require.NotEqual(t, ackLeaseName("MyLaptop"), ackLeaseName("mylaptop"))
}

// TestAckGateCombines walks the leader's gate through the life of a
// rotation with a follower's summary: digests, freshness on the leader's
// own clock, relists that must not refresh, unreadable and own summaries.
func TestAckGateCombines(t *testing.T) {
	local := &fakeAcks{}
	x, clk, _ := newTestExchange(t, "leader", local)
	want := ackDigest("new")
	stale := x.cfg.StaleAfter

	ok, lag := x.Gate(want)
	require.False(t, ok, "closed until the other summaries are listed")
	require.Zero(t, lag)
	synced(x)
	ok, _ = x.Gate(want)
	require.True(t, ok, "no agents anywhere")

	local.set(holding("new", 2, 4, 0))
	ok, _ = x.Gate(want)
	require.True(t, ok, "the leader's own agents hold the new bundle")

	// The follower's agents still hold the old bundle: 3 watchers lag.
	x.observe(peerLease(t, "follower", "1", holding("old", 1, 3, 0)))
	ok, lag = x.Gate(want)
	require.False(t, ok)
	require.Equal(t, 3, lag)

	// They took the new bundle, but one Envoy has not ACKed it yet.
	x.observe(peerLease(t, "follower", "2", holding("new", 1, 3, 1)))
	ok, lag = x.Gate(want)
	require.False(t, ok)
	require.Equal(t, 1, lag)

	x.observe(peerLease(t, "follower", "3", holding("new", 1, 3, 0)))
	ok, lag = x.Gate(want)
	require.True(t, ok)
	require.Zero(t, lag)

	// A second follower lags, then dies: its summary counts until it is
	// stale on the leader's clock, and a relist of the same version does
	// not make it fresh again.
	x.observe(peerLease(t, "dead", "4", holding("old", 2, 0, 0)))
	ok, lag = x.Gate(want)
	require.False(t, ok)
	require.Equal(t, 2, lag, "agents without watchers count one each")
	clk.Step(stale)
	x.observe(peerLease(t, "follower", "5", holding("new", 1, 3, 0))) // the live one renews
	ok, _ = x.Gate(want)
	require.False(t, ok, "exactly StaleAfter old still counts")
	clk.Step(time.Millisecond)
	x.observe(peerLease(t, "dead", "4", holding("old", 2, 0, 0))) // relist: same resourceVersion
	ok, lag = x.Gate(want)
	require.True(t, ok, "a stale summary is ignored")
	require.Zero(t, lag)
	st := x.Status(want)
	require.Len(t, st.Peers, 2)
	require.Equal(t, AckPeerStatus{Identity: "dead", Lease: "certmesh-acks-dead", Agents: 2, Fresh: false, ObservedAt: clk.Now().Add(-stale - time.Millisecond)}, st.Peers[0])
	require.True(t, st.Peers[1].Fresh)
	require.Equal(t, 2, st.Agents)

	// It comes back (a new version): it counts again.
	x.observe(peerLease(t, "dead", "6", holding("old", 2, 0, 0)))
	ok, lag = x.Gate(want)
	require.False(t, ok)
	require.Equal(t, 2, lag)
	require.Equal(t, 2, x.Status(want).WatchersLagging)
	x.forgetObject(peerLease(t, "dead", "6", service.AckSummary{}))
	ok, _ = x.Gate(want)
	require.True(t, ok, "a deleted summary is forgotten")

	// The own Lease is never counted twice (the local registry is fresher).
	x.observe(peerLease(t, "leader", "7", holding("old", 5, 5, 0)))
	ok, _ = x.Gate(want)
	require.True(t, ok)

	// An unreadable summary is ignored and shown.
	bad := peerLease(t, "garbled", "8", service.AckSummary{})
	bad.Annotations[AckSummaryKey] = `{"bundles":{"nothex":{"agents":1}}}`
	x.observe(bad)
	ok, _ = x.Gate(want)
	require.True(t, ok)
	var shown AckPeerStatus
	for _, p := range x.Status(want).Peers {
		if p.Identity == "garbled" {
			shown = p
		}
	}
	require.NotEmpty(t, shown.Error)

	// The leader's own lag adds to the others'.
	local.set(holding("old", 1, 2, 0))
	x.observe(peerLease(t, "follower", "9", holding("new", 1, 3, 1)))
	_, lag = x.Gate(want)
	require.Equal(t, 3, lag)
}

func TestParseAckSummary(t *testing.T) {
	good := peerLease(t, "a", "1", holding("new", 1, 1, 0))
	s, err := parseAckSummary(good)
	require.NoError(t, err)
	require.Equal(t, 1, s.Agents())

	cases := []struct {
		name string
		edit func(*coordinationv1.Lease)
	}{
		{"other version", func(l *coordinationv1.Lease) { l.Labels[AckSummaryKey] = "v2" }},
		{"no annotation", func(l *coordinationv1.Lease) { delete(l.Annotations, AckSummaryKey) }},
		{"not JSON", func(l *coordinationv1.Lease) { l.Annotations[AckSummaryKey] = "{" }},
		{"negative", func(l *coordinationv1.Lease) {
			l.Annotations[AckSummaryKey] = `{"bundles":{"` + ackHex("x") + `":{"agents":-1}}}`
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := good.DeepCopy()
			tc.edit(l)
			_, err := parseAckSummary(l)
			require.ErrorIs(t, err, ErrBadAckSummaryLease)
		})
	}
}

// writes counts the create and update calls on Leases.
func writes(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetResource().Resource == "leases" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

// TestAckPublishWritesOnlyWhenNeeded: the own summary is written when it
// changes or is half-way stale, not every period.
func TestAckPublishWritesOnlyWhenNeeded(t *testing.T) {
	local := &fakeAcks{}
	local.set(holding("old", 1, 2, 0))
	x, clk, cs := newTestExchange(t, "replica-a", local)
	ctx := context.Background()
	leases := cs.CoordinationV1().Leases(ackNS)

	require.NoError(t, x.publish(ctx))
	require.Equal(t, 1, writes(cs))
	got, err := leases.Get(ctx, "certmesh-acks-replica-a", metav1.GetOptions{})
	require.NoError(t, err)
	s, err := parseAckSummary(got)
	require.NoError(t, err)
	require.Equal(t, local.Summary(), s)
	require.Equal(t, "replica-a", *got.Spec.HolderIdentity)
	require.Equal(t, int32(3), *got.Spec.LeaseDurationSeconds)
	require.Equal(t, ManagedByValue, got.Labels[ManagedByLabel])
	require.True(t, got.Spec.RenewTime.Time.Equal(clk.Now()))

	clk.Step(x.cfg.Period)
	require.NoError(t, x.publish(ctx))
	require.Equal(t, 1, writes(cs), "unchanged and fresh: no write")

	local.set(holding("new", 1, 2, 0))
	require.NoError(t, x.publish(ctx))
	require.Equal(t, 2, writes(cs), "changed: written")

	clk.Step(x.cfg.StaleAfter/2 - time.Millisecond)
	require.NoError(t, x.publish(ctx))
	require.Equal(t, 2, writes(cs))
	clk.Step(time.Millisecond)
	require.NoError(t, x.publish(ctx))
	require.Equal(t, 3, writes(cs), "half-way stale: renewed")
	got, err = leases.Get(ctx, "certmesh-acks-replica-a", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, got.Spec.RenewTime.Time.Equal(clk.Now()))

	// Someone deleted it: the next write finds out and recreates it.
	require.NoError(t, leases.Delete(ctx, "certmesh-acks-replica-a", metav1.DeleteOptions{}))
	local.set(holding("new", 2, 2, 0))
	require.NoError(t, x.publish(ctx))
	_, err = leases.Get(ctx, "certmesh-acks-replica-a", metav1.GetOptions{})
	require.NoError(t, err)

	x.stop()
	_, err = leases.Get(ctx, "certmesh-acks-replica-a", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "deleted on a clean stop: %v", err)
}

func TestAckStopKeepsOnCrash(t *testing.T) {
	local := &fakeAcks{}
	x, _, cs := newTestExchange(t, "replica-a", local)
	x.cfg.KeepOnStop = true
	require.NoError(t, x.publish(context.Background()))
	x.stop()
	_, err := cs.CoordinationV1().Leases(ackNS).Get(context.Background(), x.LeaseName(), metav1.GetOptions{})
	require.NoError(t, err)
}

// TestAckCollectDeletesDeadSummaries: a summary left by a crashed replica is
// deleted once stale for ackCollectFactor × StaleAfter; a fresh one is kept.
func TestAckCollectDeletesDeadSummaries(t *testing.T) {
	x, clk, cs := newTestExchange(t, "replica-a", &fakeAcks{})
	ctx := context.Background()
	leases := cs.CoordinationV1().Leases(ackNS)
	for _, id := range []string{"dead", "live"} {
		created, err := leases.Create(ctx, peerLease(t, id, "", service.AckSummary{}), metav1.CreateOptions{})
		require.NoError(t, err)
		x.observe(created)
	}
	clk.Step(ackCollectFactor * x.cfg.StaleAfter)
	x.collect(ctx)
	_, err := leases.Get(ctx, "certmesh-acks-dead", metav1.GetOptions{})
	require.NoError(t, err, "not yet")

	live, err := leases.Get(ctx, "certmesh-acks-live", metav1.GetOptions{})
	require.NoError(t, err)
	live.Annotations["renewed"] = "yes"
	live, err = leases.Update(ctx, live, metav1.UpdateOptions{})
	require.NoError(t, err)
	x.observe(live)
	clk.Step(time.Millisecond)
	x.collect(ctx)
	_, err = leases.Get(ctx, "certmesh-acks-dead", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "dead summary collected: %v", err)
	_, err = leases.Get(ctx, "certmesh-acks-live", metav1.GetOptions{})
	require.NoError(t, err, "a renewing replica keeps its summary")
}

// TestAckExchangeRun: two replicas on one (fake) apiserver see each other's
// summaries through Run, and a clean stop removes the own summary.
func TestAckExchangeRun(t *testing.T) {
	cs := newClientset()
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	want := ackDigest("new")
	start := func(identity string, local AckSource) (*AckExchange, func()) {
		// StaleAfter is long: whatever the gate shows here comes from
		// summaries written and watched, never from staleness.
		x, err := NewAckExchange(AckExchangeConfig{Client: cs, Namespace: ackNS, Identity: identity, Local: local, Period: time.Second, StaleAfter: time.Hour, Clock: clk})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- x.Run(ctx) }()
		return x, func() { cancel(); require.NoError(t, <-done) }
	}
	leaderAcks, followerAcks := &fakeAcks{}, &fakeAcks{}
	followerAcks.set(holding("old", 1, 2, 0))
	leader, stopLeader := start("leader", leaderAcks)
	defer stopLeader()
	follower, stopFollower := start("follower", followerAcks)

	closedWith := func(lag int) func() bool {
		return func() bool {
			clk.Step(time.Second) // the follower's period
			ok, got := leader.Gate(want)
			return !ok && got == lag
		}
	}
	require.Eventually(t, closedWith(2), 10*time.Second, 10*time.Millisecond)
	followerAcks.set(holding("new", 1, 2, 0))
	require.Eventually(t, func() bool { clk.Step(time.Second); ok, _ := leader.Gate(want); return ok }, 10*time.Second, 10*time.Millisecond)

	followerAcks.set(holding("old", 1, 2, 0))
	require.Eventually(t, closedWith(2), 10*time.Second, 10*time.Millisecond)
	stopFollower()
	_, err := cs.CoordinationV1().Leases(ackNS).Get(context.Background(), follower.LeaseName(), metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err))
	require.Eventually(t, func() bool { ok, _ := leader.Gate(want); return ok }, 10*time.Second, 10*time.Millisecond)
}
