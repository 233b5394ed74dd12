package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

// fakeUpstream is an upstream certmesh CA called in-process; down makes it
// fail like an unreachable server.
type fakeUpstream struct {
	up    *ca.CA
	td    spiffeid.TrustDomain // granted to the downstream
	calls atomic.Int32
	down  atomic.Bool
	// hang, when set, is received from before answering (a slow upstream).
	hang chan struct{}
}

var errDown = errors.New("connection refused")

func (f *fakeUpstream) SignIntermediate(_ context.Context, req ca.UpstreamRequest) (ca.UpstreamResponse, error) {
	f.calls.Add(1)
	if f.hang != nil {
		<-f.hang
	}
	if f.down.Load() {
		return ca.UpstreamResponse{}, errDown
	}
	return f.up.SignDownstream(ca.DownstreamParams{CSR: req.CSR, TrustDomain: f.td, TTL: req.TTL})
}

// upstreamPair is an upstream CA for example.org and a downstream for
// cluster2.example.org signed by it, on one fake clock.
func upstreamPair(t *testing.T) (up *catest.CA, down *catest.CA, f *fakeUpstream, clk *clocktesting.FakeClock) {
	clk = clocktesting.NewFakeClock(catest.Epoch)
	withClock := func(c *ca.Config) { c.Clock = clk }
	up = catest.New(t, "example.org", withClock)
	f = &fakeUpstream{up: up.CA, td: spiffeid.RequireTrustDomainFromString("cluster2.example.org")}
	down = catest.New(t, "cluster2.example.org", withClock, func(c *ca.Config) { c.Upstream = f })
	return up, down, f, clk
}

func verifyWith(t *testing.T, roots []*x509.Certificate, svid *x509svid.SVID, now time.Time) error {
	t.Helper()
	b := x509bundle.FromX509Authorities(svid.ID.TrustDomain(), roots)
	_, _, err := x509svid.Verify(svid.Certificates, b, x509svid.WithTime(now))
	return err
}

func TestUpstreamSignsTheIntermediate(t *testing.T) {
	up, down, f, clk := upstreamPair(t)
	require.EqualValues(t, 1, f.calls.Load())
	st := down.Status()
	require.False(t, st.Authorities[0].HasRootKey, "a downstream holds no root key")
	require.Empty(t, st.Authorities[0].NotRenewable)
	require.Equal(t, up.Roots(), down.Roots(), "the downstream's bundle is the upstream's roots")

	svid := down.SVID(t, "spiffe://cluster2.example.org/web", time.Hour)
	require.NoError(t, verifyWith(t, up.Roots(), svid, clk.Now()), "a downstream SVID verifies against the upstream's bundle")

	_, err := down.Rotate()
	require.ErrorIs(t, err, ca.ErrUpstreamManagesRoots)

	// A restart loads what was signed and does not ask again.
	again, err := ca.New(ca.Config{Dir: down.Dir, TrustDomain: down.TrustDomain(), Clock: clk, Upstream: f})
	require.NoError(t, err)
	require.EqualValues(t, 1, f.calls.Load())
	require.Equal(t, down.Status().Authorities[0].IntermediateStart, again.Status().Authorities[0].IntermediateStart)
}

func TestUpstreamNameConstraints(t *testing.T) {
	up, _, _, clk := upstreamPair(t)
	td := spiffeid.RequireTrustDomainFromString("cluster2.example.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{td.ID().URL()}}, key)
	require.NoError(t, err)
	csr, err := x509.ParseCertificateRequest(csrDER)
	require.NoError(t, err)
	resp, err := up.SignDownstream(ca.DownstreamParams{CSR: csr, TrustDomain: td, TTL: 48 * time.Hour})
	require.NoError(t, err)
	inter := resp.Chain[0]
	require.True(t, inter.IsCA)
	require.True(t, inter.MaxPathLenZero)
	require.Equal(t, []string{"cluster2.example.org"}, inter.PermittedURIDomains)

	// What a stolen downstream key could sign: leaves in and out of its trust domain.
	leafFor := func(id string) *x509svid.SVID {
		lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		u, _ := url.Parse(id)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(7), NotBefore: clk.Now().Add(-time.Minute), NotAfter: clk.Now().Add(time.Hour),
			URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, inter, lk.Public(), key)
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: lk}
	}
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{name: "its own trust domain", id: "spiffe://cluster2.example.org/web", ok: true},
		{name: "the upstream's trust domain", id: "spiffe://example.org/admin"},
		{name: "a sibling cluster's", id: "spiffe://cluster3.example.org/web"},
		{name: "a look-alike", id: "spiffe://evilcluster2.example.org/web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyWith(t, up.Roots(), leafFor(tt.id), clk.Now())
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}

	// The upstream signs only the trust domain it grants.
	_, err = up.SignDownstream(ca.DownstreamParams{CSR: csr, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	require.ErrorIs(t, err, ca.ErrDownstreamCSR)
}

func TestUpstreamRenewalAsksAgain(t *testing.T) {
	up, down, f, clk := upstreamPair(t)
	first := down.Status().Authorities[0]
	clk.Step(first.NextStep.Sub(clk.Now()))
	require.Equal(t, ca.StepRenewIntermediate, first.NextStepKind)
	require.NoError(t, down.Advance())
	require.EqualValues(t, 2, f.calls.Load())
	second := down.Status().Authorities[0]
	require.Equal(t, first.ID, second.ID, "same root, same authority")
	require.NotEqual(t, first.Intermediate, second.Intermediate)
	require.True(t, second.IntermediateStart.After(first.IntermediateStart))
	svid := down.SVID(t, "spiffe://cluster2.example.org/web", time.Hour)
	require.NoError(t, verifyWith(t, up.Roots(), svid, clk.Now()))
}

func TestUpstreamDownKeepsSigning(t *testing.T) {
	up, down, f, clk := upstreamPair(t)
	first := down.Status().Authorities[0]
	f.down.Store(true)
	clk.Step(first.NextStep.Sub(clk.Now()) + time.Hour)
	err := down.Advance()
	require.ErrorIs(t, err, ca.ErrUpstream)
	require.ErrorIs(t, err, errDown, "the cause is kept for the log")
	st := down.Status()
	require.Equal(t, 1, st.RenewalFailures)
	require.Positive(t, st.Overdue, "status shows the renewal overdue")
	require.Equal(t, first.Intermediate, st.Authorities[0].Intermediate)

	// The intermediate it holds keeps signing full-length SVIDs.
	svid := down.SVID(t, "spiffe://cluster2.example.org/web", 24*time.Hour)
	require.True(t, clk.Now().Add(24*time.Hour).Equal(svid.Certificates[0].NotAfter))
	require.NoError(t, verifyWith(t, up.Roots(), svid, clk.Now()))

	f.down.Store(false)
	require.NoError(t, down.Advance())
	require.NotEqual(t, first.Intermediate, down.Status().Authorities[0].Intermediate)
	require.NoError(t, verifyWith(t, up.Roots(), svid, clk.Now()), "an SVID of the old intermediate still verifies")
}

func TestUpstreamRootChangeRefused(t *testing.T) {
	up, down, _, clk := upstreamPair(t)
	_, err := up.Rotate()
	require.NoError(t, err)
	clk.Step(8 * 24 * time.Hour) // past the overlap and the downstream's half life
	require.NoError(t, up.Advance())
	err = down.Advance()
	require.ErrorIs(t, err, ca.ErrUpstreamRootChanged)
}

// TestUpstreamSlowDoesNotBlockStatus: the upstream is asked without the
// CA's lock, so status and metrics answer while it hangs.
func TestUpstreamSlowDoesNotBlockStatus(t *testing.T) {
	_, down, f, clk := upstreamPair(t)
	first := down.Status().Authorities[0]
	clk.Step(first.NextStep.Sub(clk.Now()))
	f.hang = make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- down.Advance() }()
	require.Eventually(t, func() bool { return f.calls.Load() == 2 }, 10*time.Second, time.Millisecond)
	require.Equal(t, first.Intermediate, down.Status().Authorities[0].Intermediate, "Status answers while the upstream hangs")
	close(f.hang)
	require.NoError(t, <-done)
	require.NotEqual(t, first.Intermediate, down.Status().Authorities[0].Intermediate)
}
