package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/upstream"
	"github.com/certmesh/certmesh/ca/wire"
)

var (
	upTD   = spiffeid.RequireTrustDomainFromString("example.org")
	downTD = spiffeid.RequireTrustDomainFromString("cluster2.example.org")
)

// startUpstream runs a certmesh server for example.org on loopback until
// the returned stop is called (or the test ends).
func startUpstream(t *testing.T) (*server.Server, *prometheus.Registry, func()) {
	reg := prometheus.NewRegistry()
	up, err := server.New(server.Config{Dir: t.TempDir(), TrustDomain: upTD, Listen: "127.0.0.1:0", Registerer: reg})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	stop := func() {
		if cancel != nil {
			cancel()
			require.NoError(t, <-done)
			cancel = nil
		}
	}
	t.Cleanup(stop)
	return up, reg, stop
}

func tokenFile(t *testing.T, up *server.Server, id string) string {
	tok, _, err := up.Tokens.Create(spiffeid.RequireFromString(id), time.Hour)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(p, []byte(tok+"\n"), 0o600))
	return p
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDownstreamServer: a downstream certmesh server gets its intermediate
// from an upstream one over gRPC, at start and at renewal; its SVIDs verify
// against the upstream's bundle; with the upstream gone a renewal fails
// clearly and the intermediate held keeps signing.
func TestDownstreamServer(t *testing.T) {
	up, reg, stopUp := startUpstream(t)
	dir := t.TempDir()
	client, err := upstream.New(upstream.Config{
		Addr: up.Addr(), Bundle: x509bundle.FromX509Authorities(upTD, up.CA.Roots()),
		TokenFile: tokenFile(t, up, "spiffe://example.org/certmesh/downstream/cluster2"), SVIDFile: filepath.Join(dir, "upstream-svid.pem"),
	})
	require.NoError(t, err)
	// The downstream's CA runs on a fake clock, so that its renewal can be
	// made due; the upstream and TLS use the real one. It is not Run: the
	// test drives Advance.
	clk := clocktesting.NewFakeClock(time.Now())
	down, err := server.New(server.Config{Dir: dir, TrustDomain: downTD, Listen: "127.0.0.1:0", Clock: clk, Upstream: client})
	require.NoError(t, err)
	t.Cleanup(func() { _ = down.Close() })

	verify := func(svid *x509svid.SVID) error {
		_, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(downTD, up.CA.Roots()), x509svid.WithTime(clk.Now()))
		return err
	}
	svidOf := func() *x509svid.SVID {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		leaf, err := down.CA.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://cluster2.example.org/web"), TTL: time.Hour})
		require.NoError(t, err)
		var certs []*x509.Certificate
		for _, der := range leaf.Chain[:2] {
			c, err := x509.ParseCertificate(der)
			require.NoError(t, err)
			certs = append(certs, c)
		}
		return &x509svid.SVID{Certificates: certs, PrivateKey: key}
	}
	require.Equal(t, up.CA.Roots(), down.CA.Roots(), "the downstream's bundle is the upstream's")
	require.NoError(t, verify(svidOf()))
	require.False(t, down.CA.Status().Authorities[0].HasRootKey)
	require.EqualValues(t, 1, counter(t, reg, "certmesh_ca_svids_issued_total", "attestor", "downstream_intermediate"))

	// Renewal asks the upstream again, with the SVID the token bought (the
	// join token is spent).
	first := down.CA.Status().Authorities[0]
	clk.Step(first.NextStep.Sub(clk.Now()) + time.Minute)
	require.NoError(t, down.CA.Advance())
	second := down.CA.Status().Authorities[0]
	require.NotEqual(t, first.Intermediate, second.Intermediate)
	require.EqualValues(t, 2, counter(t, reg, "certmesh_ca_svids_issued_total", "attestor", "downstream_intermediate"))
	require.NoError(t, verify(svidOf()))

	// A forged request: a node agent's token, then no credential at all.
	nodeTok, err := os.ReadFile(tokenFile(t, up, "spiffe://example.org/certmesh/node/n1"))
	require.NoError(t, err)
	conn, err := grpc.NewClient(up.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(upTD, up.CA.Roots()), tlsconfig.AuthorizeID(wire.ServerID(upTD))))))
	require.NoError(t, err)
	defer conn.Close()
	csr := downstreamCSR(t)
	ctx := metadata.AppendToOutgoingContext(context.Background(), wire.AuthorizationKey, "Bearer "+string(nodeTok[:len(nodeTok)-1]))
	_, err = wire.SignIntermediate(ctx, conn, wire.IntermediateRequest{CSR: csr, TTL: time.Hour})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.EqualValues(t, 1, counter(t, reg, "certmesh_ca_refusals_total", "reason", "not_downstream"))
	_, err = wire.SignIntermediate(context.Background(), conn, wire.IntermediateRequest{CSR: csr, TTL: time.Hour})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.EqualValues(t, 1, counter(t, reg, "certmesh_ca_refusals_total", "reason", "no_credential"))

	// The upstream goes away for longer than a renewal period.
	stopUp()
	clk.Step(max(second.NextStep.Sub(clk.Now()), 0) + time.Minute)
	err = down.CA.Advance()
	require.ErrorIs(t, err, ca.ErrUpstream)
	st := down.CA.Status()
	require.Equal(t, 1, st.RenewalFailures)
	require.Equal(t, second.Intermediate, st.Authorities[0].Intermediate, "the intermediate held is kept")
	require.NoError(t, verify(svidOf()), "and keeps signing")
}

func downstreamCSR(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	u, _ := url.Parse("spiffe://cluster2.example.org")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	require.NoError(t, err)
	return der
}

// TestDownstreamWrongTrustDomain: a downstream started for another trust
// domain than its identity grants fails at start, saying which one.
func TestDownstreamWrongTrustDomain(t *testing.T) {
	up, _, _ := startUpstream(t)
	client, err := upstream.New(upstream.Config{
		Addr: up.Addr(), Bundle: x509bundle.FromX509Authorities(upTD, up.CA.Roots()),
		TokenFile: tokenFile(t, up, "spiffe://example.org/certmesh/downstream/cluster3"),
	})
	require.NoError(t, err)
	_, err = server.New(server.Config{Dir: t.TempDir(), TrustDomain: downTD, Listen: "127.0.0.1:0", Upstream: client})
	require.ErrorIs(t, err, upstream.ErrTrustDomain)
	require.ErrorIs(t, err, ca.ErrUpstream)
}

// TestDownstreamEvicted: the upstream re-authorizes the downstream's SVID
// on every request, so evicting the downstream there stops its next
// intermediate renewal, counted as node_evicted; the intermediate held
// keeps signing.
func TestDownstreamEvicted(t *testing.T) {
	up, reg, _ := startUpstream(t)
	id := "spiffe://example.org/certmesh/downstream/cluster2"
	client, err := upstream.New(upstream.Config{
		Addr: up.Addr(), Bundle: x509bundle.FromX509Authorities(upTD, up.CA.Roots()), TokenFile: tokenFile(t, up, id),
	})
	require.NoError(t, err)
	clk := clocktesting.NewFakeClock(time.Now())
	down, err := server.New(server.Config{Dir: t.TempDir(), TrustDomain: downTD, Listen: "127.0.0.1:0", Clock: clk, Upstream: client})
	require.NoError(t, err)
	t.Cleanup(func() { _ = down.Close() })

	_, err = up.Nodes.Evict(spiffeid.RequireFromString(id))
	require.NoError(t, err)
	first := down.CA.Status().Authorities[0]
	clk.Step(first.NextStep.Sub(clk.Now()) + time.Minute)
	err = down.CA.Advance()
	require.ErrorIs(t, err, ca.ErrUpstream)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.EqualValues(t, 1, counter(t, reg, "certmesh_ca_refusals_total", "reason", "node_evicted"))
	require.Equal(t, first.Intermediate, down.CA.Status().Authorities[0].Intermediate)
}
