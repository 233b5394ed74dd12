package envoy

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testTD = "example.org"
	testID = "spiffe://example.org/ns/shop/sa/web"
	// waitFor bounds every wait for the server; generous because a test
	// asserts behaviour, never speed.
	waitFor = 10 * time.Second
)

// fakeSource is a Source whose content and change signal the test drives.
type fakeSource struct {
	mu      sync.Mutex
	td      spiffeid.TrustDomain
	svids   map[spiffeid.ID]*x509svid.SVID
	bundle  *x509bundle.Bundle
	edges   map[string][2][]byte
	changed chan struct{}
	// afterSVID, if set, runs after X509SVID has read its answer, outside
	// the lock, so a test can hold a request in the middle of a push.
	afterSVID func()
}

func newFakeSource(td spiffeid.TrustDomain) *fakeSource {
	return &fakeSource{td: td, svids: map[spiffeid.ID]*x509svid.SVID{}, edges: map[string][2][]byte{}, changed: make(chan struct{})}
}

func (f *fakeSource) X509SVID(id spiffeid.ID) (*x509svid.SVID, bool) {
	f.mu.Lock()
	s, ok := f.svids[id]
	hook := f.afterSVID
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return s, ok
}

func (f *fakeSource) X509Bundle() *x509bundle.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bundle
}

func (f *fakeSource) EdgeCertificate(name string) ([]byte, []byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.edges[name]
	return e[0], e[1], ok
}

func (f *fakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeSource) TrustDomain() spiffeid.TrustDomain { return f.td }

// update changes the content under the lock and then signals the change.
func (f *fakeSource) update(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeSource) setSVID(s *x509svid.SVID) { f.update(func(f *fakeSource) { f.svids[s.ID] = s }) }

func (f *fakeSource) setEdge(name string, cert, key []byte) {
	f.update(func(f *fakeSource) { f.edges[name] = [2][]byte{cert, key} })
}

// fakeAttestor grants one identity (or fails) and records what it saw.
type fakeAttestor struct {
	mu    sync.Mutex
	ident identity.Identity
	err   error
	creds []identity.Credential
}

func (a *fakeAttestor) Attest(_ context.Context, c identity.Credential) (identity.Identity, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.creds = append(a.creds, c)
	return a.ident, a.err
}

// ackCounter counts the bundle ACKs the handler recorded, so a test can
// wait until the server has taken in an ACK it sent.
type ackCounter struct{ n atomic.Int64 }

func (a *ackCounter) BundleAcked(uint64, [32]byte) { a.n.Add(1) }
func (a *ackCounter) StreamGone(uint64)            {}

// env is one component-test setup: a real CA, a fake source seeded from
// it, and the handler served on a unix socket with peer credentials.
type env struct {
	ca      *catest.CA
	src     *fakeSource
	att     *fakeAttestor
	h       *Handler
	sock    string
	metrics *Metrics
	acks    *ackCounter

	connMu sync.Mutex
	conns  []secretv3.SecretDiscoveryServiceClient
}

func newEnv(t testing.TB, withSVID bool) *env {
	t.Helper()
	c := catest.New(t, testTD)
	src := newFakeSource(spiffeid.RequireTrustDomainFromString(testTD))
	src.bundle = c.Bundle()
	if withSVID {
		s := c.SVID(t, testID, time.Hour)
		src.svids[s.ID] = s
	}
	att := &fakeAttestor{ident: identity.Identity{ID: spiffeid.RequireFromString(testID), EdgeCertificates: []string{"shop"}}}
	m, err := NewMetrics(nil)
	require.NoError(t, err)
	acks := &ackCounter{}
	h, err := New(Config{Source: src, Attestor: att, Metrics: m, Acks: acks})
	require.NoError(t, err)
	e := &env{ca: c, src: src, att: att, h: h, metrics: m, acks: acks, sock: filepath.Join(t.TempDir(), "sds.sock")}
	e.serve(t)
	return e
}

func (e *env) serve(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("unix", e.sock)
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(identity.PeerCredentials()))
	e.h.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// rotate gives the workload a fresh SVID and returns it.
func (e *env) rotate(t testing.TB) *x509svid.SVID {
	t.Helper()
	s := e.ca.SVID(t, testID, time.Hour)
	e.src.setSVID(s)
	return s
}

func (e *env) client(t testing.TB) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(cc)
}

// envoy behaves like Envoy's SDS client on one stream.
type envoy struct {
	t      testing.TB
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
}

func (e *env) envoy(t testing.TB) *envoy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := e.client(t).StreamSecrets(ctx)
	require.NoError(t, err)
	return &envoy{t: t, stream: st}
}

func (v *envoy) send(names []string, last *discoveryv3.DiscoveryResponse, nack string) {
	v.t.Helper()
	req := &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: names}
	if last != nil {
		req.ResponseNonce = last.GetNonce()
		req.VersionInfo = last.GetVersionInfo()
	}
	if nack != "" {
		req.ErrorDetail = status.New(3, nack).Proto()
	}
	v.sendRaw(req)
}

// sendRaw sends req as it is. io.EOF means the server already ended the
// stream; its status comes from the next Recv, which the tests look at.
func (v *envoy) sendRaw(req *discoveryv3.DiscoveryRequest) {
	v.t.Helper()
	if err := v.stream.Send(req); !errors.Is(err, io.EOF) {
		require.NoError(v.t, err)
	}
}

// recv waits for the next response or stream error.
func (v *envoy) recv() (*discoveryv3.DiscoveryResponse, error) {
	v.t.Helper()
	type result struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := v.stream.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-time.After(waitFor):
		v.t.Fatal("no response from the SDS server")
		return nil, nil
	}
}

func (v *envoy) mustRecv() *discoveryv3.DiscoveryResponse {
	v.t.Helper()
	r, err := v.recv()
	require.NoError(v.t, err)
	return r
}

// secrets unpacks a response by name.
func secrets(t testing.TB, r *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range r.GetResources() {
		s := new(tlsv3.Secret)
		require.NoError(t, a.UnmarshalTo(s))
		require.NoError(t, s.ValidateAll())
		out[s.GetName()] = s
	}
	return out
}

// svidOf parses the certificate and key of a tls_certificate secret.
func svidOf(t testing.TB, s *tlsv3.Secret) *x509svid.SVID {
	t.Helper()
	tc := s.GetTlsCertificate()
	require.NotNil(t, tc, "secret %q is not a tls_certificate", s.GetName())
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	require.NoError(t, err)
	return svid
}

// envoyOn opens a stream on the i-th shared connection of the env, so many
// streams can share a handful of connections as Envoy's do.
func (e *env) envoyOn(t testing.TB, i int) *envoy {
	t.Helper()
	e.connMu.Lock()
	for len(e.conns) <= i {
		e.conns = append(e.conns, e.client(t))
	}
	c := e.conns[i]
	e.connMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := c.StreamSecrets(ctx)
	require.NoError(t, err)
	return &envoy{t: t, stream: st}
}

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
