package service_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const registrations = `trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/ns/default/sa/web
    uid: 1000
    dnsNames: [web.default.svc]
  - spiffeID: spiffe://example.org/ns/batch/sa/job
    uid: 2000
    nodes: [spiffe://example.org/certmesh/node/n2]
`

type fixture struct {
	ca      *catest.CA
	tokens  *identity.JoinTokens
	nodes   *identity.Nodes
	regs    *identity.RegistrationsFile
	metrics *service.Metrics
	acks    *service.AckRegistry
	addr    string
	// seen records the methods the server's interceptor chain passed on,
	// after the load shedder.
	seen *methodRecorder
}

// methodRecorder is a unary interceptor that notes every method it sees.
type methodRecorder struct {
	mu      sync.Mutex
	methods []string
}

func (m *methodRecorder) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	m.mu.Lock()
	m.methods = append(m.methods, info.FullMethod)
	m.mu.Unlock()
	return h(ctx, req)
}

func (m *methodRecorder) Methods() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.methods...)
}

func newFixture(t testing.TB) *fixture { return newFixtureWith(t) }

func newFixtureWith(t testing.TB, opts ...func(*service.Config)) *fixture {
	t.Helper()
	return newFixtureOn(t, catest.New(t, "example.org"), opts...)
}

// newFixtureOn is newFixtureWith around a CA the test made.
func newFixtureOn(t testing.TB, c *catest.CA, opts ...func(*service.Config)) *fixture {
	t.Helper()
	regsPath := filepath.Join(t.TempDir(), "registrations.yaml")
	require.NoError(t, os.WriteFile(regsPath, []byte(registrations), 0o600))
	regs, err := identity.OpenRegistrations(regsPath)
	require.NoError(t, err)
	tokens, err := identity.NewJoinTokens(identity.JoinTokensConfig{TrustDomain: c.TrustDomain(), Clock: c.Clock})
	require.NoError(t, err)
	nodes, err := identity.NewNodes(identity.NodesConfig{TrustDomain: c.TrustDomain(), Clock: c.Clock})
	require.NoError(t, err)
	m := service.NewMetrics(nil)
	cfg := service.Config{CA: c, Attestor: identity.Chain{tokens}, Registry: regs, Nodes: nodes, Metrics: m, Clock: c.Clock}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := service.New(cfg)
	require.NoError(t, err)
	sc := &service.ServingCert{CA: c.CA, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Clock: c.Clock}
	seen := &methodRecorder{}
	g := service.NewGRPCServer(svc.TransportCredentials(sc.ServerTLSConfig()), grpc.ChainUnaryInterceptor(svc.UnaryShedder(), seen.intercept))
	svc.Register(g)
	acks := svc.NewAckRegistry()
	acks.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- service.Serve(ctx, g, lis) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return &fixture{ca: c, tokens: tokens, nodes: nodes, regs: regs, metrics: m, acks: acks, addr: lis.Addr().String(), seen: seen}
}

// dial connects as a real agent would: the server is verified by the trust
// bundle and its SPIFFE ID; svid, when given, is presented for renewal.
func (f *fixture) dial(t testing.TB, svid *x509svid.SVID) pb.IstioCertificateServiceClient {
	t.Helper()
	return pb.NewIstioCertificateServiceClient(f.conn(t, svid))
}

// conn is dial's connection, for the other services on the listener.
func (f *fixture) conn(t testing.TB, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	authz := tlsconfig.AuthorizeID(wire.ServerID(f.ca.TrustDomain()))
	var cfg *tls.Config
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, f.ca.Bundle(), authz)
	} else {
		cfg = tlsconfig.TLSClientConfig(f.ca.Bundle(), authz)
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func csrPEM(t testing.TB, key crypto.Signer, uri string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, err := url.Parse(uri)
		require.NoError(t, err)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func bearer(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

func parseChain(t testing.TB, chain []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range chain {
		b, _ := pem.Decode([]byte(p))
		require.NotNil(t, b)
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

func TestJoinTokenThenRenewOverMTLS(t *testing.T) {
	f := newFixture(t)
	id := spiffeid.RequireFromString("spiffe://example.org/vm/db1")
	token, _, err := f.tokens.Create(id, 10*time.Minute)
	require.NoError(t, err)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	resp, err := f.dial(t, nil).CreateCertificate(bearer(token), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, ""), ValidityDuration: 600})
	require.NoError(t, err)
	require.Len(t, resp.CertChain, 3, "leaf, intermediate, root")
	certs := parseChain(t, resp.CertChain)
	got, _, err := x509svid.Verify(certs[:2], f.ca.Bundle())
	require.NoError(t, err)
	require.Equal(t, id, got)
	require.True(t, certs[2].IsCA, "root last")

	_, err = f.dial(t, nil).CreateCertificate(bearer(token), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "a join token works once")
	require.Equal(t, 1.0, testutil.ToFloat64(f.metrics.Refused("token_used")))

	svid := &x509svid.SVID{ID: id, Certificates: certs[:2], PrivateKey: key}
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	resp, err = f.dial(t, svid).CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: csrPEM(t, newKey, "")})
	require.NoError(t, err, "renewal with the current SVID")
	got, _, err = x509svid.Verify(parseChain(t, resp.CertChain)[:2], f.ca.Bundle())
	require.NoError(t, err)
	require.Equal(t, id, got)
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrPEM(t, key, "")
	newToken := func(id string) string {
		tok, _, err := f.tokens.Create(spiffeid.RequireFromString(id), time.Minute)
		require.NoError(t, err)
		return tok
	}
	expired := newToken("spiffe://example.org/vm/old")
	f.ca.Clock.Step(2 * time.Minute)
	foreign := catest.New(t, "other.org").SVID(t, "spiffe://other.org/vm/x", time.Hour)
	impostorCA := catest.New(t, "example.org").SVID(t, "spiffe://example.org/vm/x", time.Hour)
	node := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	workload := f.ca.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
	impersonate := func(id string) *structpb.Struct {
		s, err := structpb.NewStruct(map[string]any{wire.ImpersonatedIdentityKey: id})
		require.NoError(t, err)
		return s
	}

	tests := []struct {
		name   string
		ctx    context.Context
		svid   *x509svid.SVID
		req    *pb.IstioCertificateRequest
		code   codes.Code
		reason string
	}{
		{name: "no credential", ctx: context.Background(), req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "no_credential"},
		{name: "unknown token", ctx: bearer("cmjt.AAAA"), req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "unknown_token"},
		{name: "expired token", ctx: bearer(expired), req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "token_expired"},
		{name: "not a token we know", ctx: bearer("eyJhbGciOi"), req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "unsupported_credential"},
		{name: "token of 1MB", ctx: bearer(strings.Repeat("a", 1<<20)), req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated},
		{name: "client SVID of another trust domain", ctx: context.Background(), svid: foreign, req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "bad_client_svid"},
		{name: "client SVID of another CA", ctx: context.Background(), svid: impostorCA, req: &pb.IstioCertificateRequest{Csr: good}, code: codes.Unauthenticated, reason: "bad_client_svid"},
		{name: "CSR not PEM", ctx: bearer(newToken("spiffe://example.org/vm/a")), req: &pb.IstioCertificateRequest{Csr: "junk"}, code: codes.InvalidArgument, reason: "csr_not_pem"},
		{name: "CSR for another identity", ctx: bearer(newToken("spiffe://example.org/vm/a")), req: &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "spiffe://example.org/vm/b")}, code: codes.PermissionDenied, reason: "csr_identity"},
		{name: "negative TTL", ctx: bearer(newToken("spiffe://example.org/vm/a")), req: &pb.IstioCertificateRequest{Csr: good, ValidityDuration: -5}, code: codes.InvalidArgument, reason: "bad_ttl"},
		{name: "workload impersonating", ctx: context.Background(), svid: workload, req: &pb.IstioCertificateRequest{Csr: good, Metadata: impersonate("spiffe://example.org/ns/default/sa/web")}, code: codes.PermissionDenied, reason: "impersonation_denied"},
		{name: "node impersonating unregistered", ctx: context.Background(), svid: node, req: &pb.IstioCertificateRequest{Csr: good, Metadata: impersonate("spiffe://example.org/ns/default/sa/db")}, code: codes.PermissionDenied, reason: "impersonation_denied"},
		{name: "node impersonating another node's workload", ctx: context.Background(), svid: node, req: &pb.IstioCertificateRequest{Csr: good, Metadata: impersonate("spiffe://example.org/ns/batch/sa/job")}, code: codes.PermissionDenied, reason: "impersonation_other_node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.reason != "" {
				before = testutil.ToFloat64(f.metrics.Refused(tt.reason))
			}
			_, err := f.dial(t, tt.svid).CreateCertificate(tt.ctx, tt.req)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if tt.reason != "" {
				require.Equal(t, before+1, testutil.ToFloat64(f.metrics.Refused(tt.reason)), "refusal counted")
			}
		})
	}
}

func TestNodeAgentGetsRegisteredWorkloadWithDNS(t *testing.T) {
	f := newFixture(t)
	node := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	leaf, err := f.signFor(t, node, "spiffe://example.org/ns/default/sa/web")
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/ns/default/sa/web", leaf.URIs[0].String())
	require.Equal(t, []string{"web.default.svc"}, leaf.DNSNames)
}

// TestNodeScopedRegistration: a registration that lists nodes is granted to
// those node agents only (TestRefusals has another node's refusal); one
// that lists none is any node's.
func TestNodeScopedRegistration(t *testing.T) {
	f := newFixture(t)
	n2 := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n2", time.Hour)
	for _, id := range []string{"spiffe://example.org/ns/batch/sa/job", "spiffe://example.org/ns/default/sa/web"} {
		leaf, err := f.signFor(t, n2, id)
		require.NoError(t, err, id)
		require.Equal(t, id, leaf.URIs[0].String())
	}
}

// signFor asks, as the node agent node, for id's certificate
// (ImpersonatedIdentity) and returns the leaf.
func (f *fixture) signFor(t *testing.T, node *x509svid.SVID, id string) (*x509.Certificate, error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	md, err := structpb.NewStruct(map[string]any{wire.ImpersonatedIdentityKey: id})
	require.NoError(t, err)
	resp, err := f.dial(t, node).CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, ""), Metadata: md})
	if err != nil {
		return nil, err
	}
	return parseChain(t, resp.CertChain)[0], nil
}

// holdingSigner makes its first Sign wait until until is closed (or 10 s).
type holdingSigner struct {
	service.Signer
	until <-chan struct{}
	once  sync.Once
}

func (h *holdingSigner) Sign(p ca.SignParams) (*ca.Leaf, error) {
	h.once.Do(func() {
		select {
		case <-h.until:
		case <-time.After(10 * time.Second):
		}
	})
	return h.Signer.Sign(p)
}

func TestOversizedMessageRefused(t *testing.T) {
	f := newFixture(t)
	_, err := f.dial(t, nil).CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: string(make([]byte, 2<<20))})
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
}

// TestStartStormIsShedNotFatal: with one signing slot and no queue, a burst
// of requests gets ResourceExhausted with retry advice for those that do
// not fit, and every caller that retries as advised gets its certificate.
// The first signature holds its slot until some caller has been shed (10 s at
// most): signing is fast enough that a burst could otherwise fit in the slot
// one by one, and the test would depend on the machine's speed.
func TestStartStormIsShedNotFatal(t *testing.T) {
	firstShed := make(chan struct{})
	f := newFixtureWith(t, func(c *service.Config) {
		c.MaxInFlight, c.QueueWait = 1, time.Millisecond
		c.CA = &holdingSigner{Signer: c.CA, until: firstShed}
	})
	svid := f.ca.SVID(t, "spiffe://example.org/certmesh/node/storm", time.Hour)
	client := f.dial(t, svid)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")}
	const callers = 50
	var shed atomic.Int64
	errs := make(chan error, callers)
	for range callers {
		go func() {
			for attempt := 0; attempt < 200; attempt++ {
				var trailer metadata.MD
				_, err := client.CreateCertificate(context.Background(), req, grpc.Trailer(&trailer))
				if status.Code(err) != codes.ResourceExhausted {
					errs <- err
					return
				}
				if shed.Add(1) == 1 {
					close(firstShed)
				}
				if got := trailer.Get(wire.RetryAfterKey); len(got) != 1 || got[0] != "500" {
					errs <- fmt.Errorf("shed without retry advice: %v", got)
					return
				}
				time.Sleep(time.Duration(1+attempt%5) * time.Millisecond)
			}
			errs <- errors.New("still shed after 200 attempts")
		}()
	}
	for range callers {
		require.NoError(t, <-errs)
	}
	require.Positive(t, shed.Load(), "a burst beyond one slot must be shed")
	require.Equal(t, float64(shed.Load()), testutil.ToFloat64(f.metrics.Refused("overloaded")))
}
