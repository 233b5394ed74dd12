package sds_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	td     = spiffeid.RequireTrustDomainFromString("example.org")
	web    = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	db     = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/db")
	nodeID = spiffeid.RequireFromString("spiffe://example.org/certmesh/node/test")
)

const regsYAML = `trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/ns/default/sa/web
    uid: 4001
    dnsNames: [web.default.svc]
  - spiffeID: spiffe://example.org/ns/default/sa/db
    uid: 4002
`

// caServer is a real CA server on loopback in a temporary state directory.
type caServer struct {
	*server.Server
	dir    string
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startCA(t testing.TB, dir, addr string, opts ...func(*server.Config)) *caServer {
	t.Helper()
	regs, err := identity.ParseRegistrations([]byte(regsYAML), "regs.yaml")
	require.NoError(t, err)
	cfg := server.Config{Dir: dir, TrustDomain: td, Registrations: regs, Listen: addr}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c := &caServer{Server: srv, dir: dir, addr: srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- srv.Run(ctx) }()
	t.Cleanup(c.stop)
	return c
}

func (c *caServer) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
		c.cancel = nil
	}
}

type agentRun struct {
	*sds.Agent
	clock  *clocktesting.FakeClock
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, c *caServer, workloads ...spiffeid.ID) *agentRun {
	t.Helper()
	return startAgentWith(t, c, nil, workloads...)
}

// startAgentWith starts an agent whose Config.WorkloadOn is on.
func startAgentWith(t *testing.T, c *caServer, on func(workload, node spiffeid.ID) bool, workloads ...spiffeid.ID) *agentRun {
	t.Helper()
	token, _, err := c.Tokens.Create(nodeID, time.Minute)
	require.NoError(t, err)
	clk := clocktesting.NewFakeClock(time.Now())
	a, err := sds.New(sds.Config{
		TrustDomain: td, ServerAddr: c.addr, TrustBundle: c.CA.Roots(),
		Credential: sds.NewJoinToken(token), Workloads: workloads, WorkloadOn: on, Clock: clk,
		Jitter: func() float64 { return 0.5 }, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{Agent: a, clock: clk, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-r.done) })
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not get its SVIDs within 10s")
	}
	return r
}

func serial(t *testing.T, a *sds.Agent, id spiffeid.ID) string {
	t.Helper()
	s, ok := a.X509SVID(id)
	require.True(t, ok, "no SVID for %s", id)
	return s.Certificates[0].SerialNumber.String()
}

// waitFor polls cond (bounded: 10 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parkedTimers is how many timers an agent with one workload keeps on its
// clock while it is idle: its own SVID's and the workload's renewal, and
// the acknowledgement reporter's.
const parkedTimers = 3

// waitParked waits (bounded: 10 s) until n timers wait on the fake clock,
// that is until every goroutine of the agent that sleeps on it is parked
// again: a Step then reaches all of them, and what the last one set off
// is done.
func waitParked(t *testing.T, clk *clocktesting.FakeClock, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d timers on the fake clock", n), func() bool { return clk.Waiters() == n })
}

func TestAgentGetsEveryRegisteredSVID(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web, db)
	for _, id := range []spiffeid.ID{web, db, nodeID} {
		s, ok := a.X509SVID(id)
		require.True(t, ok, id.String())
		got, _, err := x509svid.Verify(s.Certificates, a.X509Bundle())
		require.NoError(t, err)
		require.Equal(t, id, got)
	}
	s, _ := a.X509SVID(web)
	require.Equal(t, []string{"web.default.svc"}, s.Certificates[0].DNSNames)
	_, ok := a.X509SVID(spiffeid.RequireFromString("spiffe://example.org/other"))
	require.False(t, ok)
}

func TestAgentRotatesAtHalfLife(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	before := serial(t, a.Agent, web)
	changed := a.Changed()
	start := a.clock.Now()
	// Step the fake clock a minute at a time, each step once every timer
	// of the agent is armed again (so whatever the last step set off, a
	// renewal included, is done): the SVID (1h) must turn over at half its
	// life, 30 minutes with the fixed jitter, and not before.
	var rotatedAfter time.Duration
	for step := 0; step < 40 && rotatedAfter == 0; step++ {
		waitParked(t, a.clock, parkedTimers)
		a.clock.Step(time.Minute)
		waitParked(t, a.clock, parkedTimers)
		if serial(t, a.Agent, web) != before {
			rotatedAfter = a.clock.Now().Sub(start)
		}
	}
	require.GreaterOrEqual(t, rotatedAfter, 30*time.Minute, "not before half-life")
	require.LessOrEqual(t, rotatedAfter, 32*time.Minute, "at half-life")
	select {
	case <-changed:
	default:
		t.Fatal("rotation did not notify watchers")
	}
}

func TestAgentFollowsCARotation(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	require.Len(t, a.X509Bundle().X509Authorities(), 1)
	_, err := c.CA.Rotate()
	require.NoError(t, err)
	waitFor(t, "bundle with both roots", func() bool { return len(a.X509Bundle().X509Authorities()) == 2 })
}

// Not parallel: the CA comes back on the port it had, which another test
// could take meanwhile.
func TestAgentSurvivesCAOutage(t *testing.T) {
	dir := t.TempDir()
	c := startCA(t, dir, "127.0.0.1:0")
	addr := c.addr
	a := startAgent(t, c, web)
	before := serial(t, a.Agent, web)
	c.stop()

	// With the CA gone the bundle stream's reconnect backoff is one more timer.
	waitParked(t, a.clock, parkedTimers+1)
	a.clock.Step(35 * time.Minute) // past half-life: renewal fails, backoff
	waitParked(t, a.clock, parkedTimers+1)
	require.Equal(t, before, serial(t, a.Agent, web), "current SVID kept while the CA is down")

	c2 := startCA(t, dir, addr)
	require.Equal(t, c.CA.BundlePEM(), c2.CA.BundlePEM(), "same CA after restart")
	waitFor(t, "recovery", func() bool {
		a.clock.Step(10 * time.Second)
		s, ok := a.X509SVID(web)
		return ok && s.Certificates[0].SerialNumber.String() != before
	})
}

func TestExpiredSVIDIsNeverServed(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	c.stop()
	s, ok := a.X509SVID(web)
	require.True(t, ok)
	a.clock.SetTime(s.Certificates[0].NotAfter)
	_, ok = a.X509SVID(web)
	require.False(t, ok, "an expired SVID is not served even though the CA is unreachable")
}

func TestJWTSVIDFromCA(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	waitFor(t, "JWT bundle", func() bool { return !a.JWTBundle().Empty() })
	svid, err := a.FetchJWTSVID(context.Background(), web, []string{"db"})
	require.NoError(t, err)
	require.Equal(t, web, svid.ID)
	again, err := a.FetchJWTSVID(context.Background(), web, []string{"db"})
	require.NoError(t, err)
	require.Equal(t, svid.Marshal(), again.Marshal(), "cached")
	_, err = a.FetchJWTSVID(context.Background(), spiffeid.RequireFromString("spiffe://example.org/not/registered"), []string{"x"})
	require.Error(t, err, "a node agent gets JWTs only for registered workloads")
}

// TestAgentStopsServingWhatTheCARefuses: once the CA refuses a renewal
// (here: the node was evicted), the agent drops the SVIDs at once instead
// of serving them until they expire.
func TestAgentStopsServingWhatTheCARefuses(t *testing.T) {
	t.Parallel()
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	_, err := c.Nodes.Evict(nodeID)
	require.NoError(t, err)
	waitParked(t, a.clock, parkedTimers)
	a.clock.Step(40 * time.Minute) // past half life: every slot renews, and is refused
	waitFor(t, "SVIDs dropped", func() bool {
		_, web := a.X509SVID(web)
		_, own := a.X509SVID(nodeID)
		return !web && !own
	})
}
