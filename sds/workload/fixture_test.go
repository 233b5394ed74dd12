package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/identity"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	webID = "spiffe://example.org/ns/default/sa/web"
	dbID  = "spiffe://example.org/ns/default/sa/db"
	// testKID is the key ID of testKey, a JWT key the tests hold themselves
	// so they can sign tokens the CA never would (expired, odd claims).
	testKID = "test-kid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// registrations gives uid its identity; the test process's own uid makes
// the test process the registered workload.
func registrations(t testing.TB, uid int) *identity.Registrations {
	t.Helper()
	yaml := fmt.Sprintf("trustDomain: example.org\nworkloads:\n  - spiffeID: %s\n    uid: %d\n", webID, uid)
	regs, err := identity.ParseRegistrations([]byte(yaml), "test")
	require.NoError(t, err)
	return regs
}

// fakeSource is the agent's cache, backed by a real test CA.
type fakeSource struct {
	ca      *catest.CA
	testKey crypto.Signer

	mu       sync.Mutex
	svids    map[spiffeid.ID]*x509svid.SVID
	jwt      *jwtbundle.Bundle
	changed  chan struct{}
	x509Gets int
}

var _ Source = (*fakeSource)(nil)

func newFakeSource(t testing.TB) *fakeSource {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	c := catest.New(t, "example.org")
	jwt := c.JWTBundle()
	require.NoError(t, jwt.AddJWTAuthority(testKID, key.Public()))
	return &fakeSource{ca: c, testKey: key, svids: map[spiffeid.ID]*x509svid.SVID{}, jwt: jwt, changed: make(chan struct{})}
}

func (f *fakeSource) X509SVID(id spiffeid.ID) (*x509svid.SVID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.x509Gets++
	s, ok := f.svids[id]
	return s, ok
}

func (f *fakeSource) X509Bundle() *x509bundle.Bundle { return f.ca.Bundle() }

func (f *fakeSource) JWTBundle() *jwtbundle.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jwt
}

func (f *fakeSource) FetchJWTSVID(_ context.Context, id spiffeid.ID, audience []string) (*jwtsvid.SVID, error) {
	token, _, err := f.ca.SignJWT(ca.JWTParams{ID: id, Audience: audience})
	if err != nil {
		return nil, err
	}
	return jwtsvid.ParseInsecure(token, audience)
}

func (f *fakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeSource) TrustDomain() spiffeid.TrustDomain { return td }

// notifyLocked wakes every watcher; f.mu must be held.
func (f *fakeSource) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// issue signs a fresh SVID for id, stores it and notifies.
func (f *fakeSource) issue(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	s := f.ca.SVID(t, id, time.Hour)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svids[s.ID] = s
	f.notifyLocked()
	return s
}

// touch notifies without changing anything.
func (f *fakeSource) touch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked()
}

func (f *fakeSource) setJWTBundle(b *jwtbundle.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jwt = b
	f.notifyLocked()
}

func (f *fakeSource) x509Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.x509Gets
}

// env is a handler served on a real unix socket with peer credentials.
type env struct {
	src     *fakeSource
	h       *Handler
	metrics *Metrics
	clock   *clocktesting.FakeClock
	addr    string // unix:///…, as SPIFFE_ENDPOINT_SOCKET would say
}

// start serves a handler whose registrations give uid the web identity.
func start(t *testing.T, uid int) *env {
	t.Helper()
	e := &env{src: newFakeSource(t), metrics: NewMetrics(nil), clock: clocktesting.NewFakeClock(catest.Epoch)}
	h, err := New(Config{
		Source:   e.src,
		Attestor: &identity.PeerAttestor{Registrations: registrations(t, uid)},
		Metrics:  e.metrics,
		Clock:    e.clock,
	})
	require.NoError(t, err)
	e.h = h
	sock := filepath.Join(t.TempDir(), "s")
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(identity.PeerCredentials()))
	h.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	e.addr = "unix://" + sock
	return e
}

// startRegistered serves a handler for which the test process is registered.
func startRegistered(t *testing.T) *env { return start(t, os.Getuid()) }

// client is go-spiffe's own Workload API client.
func (e *env) client(t *testing.T) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr(e.addr))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// raw is the generated client, which sends no security header by itself.
func (e *env) raw(t *testing.T) workloadpb.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return workloadpb.NewSpiffeWorkloadAPIClient(conn)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
