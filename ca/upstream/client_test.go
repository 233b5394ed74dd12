package upstream_test

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

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/upstream"
)

func csrFor(t *testing.T, td string) ca.UpstreamRequest {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	u, _ := url.Parse("spiffe://" + td)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	require.NoError(t, err)
	csr, err := x509.ParseCertificateRequest(der)
	require.NoError(t, err)
	return ca.UpstreamRequest{CSR: csr, TTL: 48 * time.Hour}
}

// TestClientIdentity: the token is used once; the SVID it bought is renewed
// over mTLS at half life and kept on disk for the next process; once it
// has expired with no token left, the error says what to do.
func TestClientIdentity(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	up, err := server.New(server.Config{Dir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	tok, _, err := up.Tokens.Create(spiffeid.RequireFromString("spiffe://example.org/certmesh/downstream/c2"), time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	tokenFile, svidFile := filepath.Join(dir, "token"), filepath.Join(dir, "svid.pem")
	require.NoError(t, os.WriteFile(tokenFile, []byte(tok), 0o600))
	clk := clocktesting.NewFakeClock(time.Now())
	cfg := upstream.Config{Addr: up.Addr(), Bundle: x509bundle.FromX509Authorities(td, up.CA.Roots()), TokenFile: tokenFile, SVIDFile: svidFile, Clock: clk}
	c, err := upstream.New(cfg)
	require.NoError(t, err)

	_, err = c.SignIntermediate(ctx, csrFor(t, "c2.example.org"))
	require.NoError(t, err)
	require.NoError(t, os.Remove(tokenFile), "from now on the SVID alone")

	clk.Step(13 * time.Hour) // past the 24 h SVID's half life: renewed over mTLS
	resp, err := c.SignIntermediate(ctx, csrFor(t, "c2.example.org"))
	require.NoError(t, err)
	require.Len(t, resp.Chain, 1)

	_, err = c.SignIntermediate(ctx, csrFor(t, "c3.example.org"))
	require.ErrorIs(t, err, upstream.ErrTrustDomain, "a CSR for a trust domain not granted is not even sent")

	// A new process finds the kept SVID.
	again, err := upstream.New(upstream.Config{Addr: cfg.Addr, Bundle: cfg.Bundle, TokenFile: tokenFile, SVIDFile: svidFile})
	require.NoError(t, err)
	_, err = again.SignIntermediate(ctx, csrFor(t, "c2.example.org"))
	require.NoError(t, err)

	clk.Step(48 * time.Hour) // every SVID has expired, the token is gone
	_, err = c.SignIntermediate(ctx, csrFor(t, "c2.example.org"))
	require.ErrorIs(t, err, upstream.ErrNoIdentity)
}

// TestClientRun keeps the SVID fresh between intermediate renewals.
func TestClientRun(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	up, err := server.New(server.Config{Dir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	tok, _, err := up.Tokens.Create(spiffeid.RequireFromString("spiffe://example.org/certmesh/downstream/c2"), time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	tokenFile, svidFile := filepath.Join(dir, "token"), filepath.Join(dir, "svid.pem")
	require.NoError(t, os.WriteFile(tokenFile, []byte(tok), 0o600))
	clk := clocktesting.NewFakeClock(time.Now())
	c, err := upstream.New(upstream.Config{Addr: up.Addr(), Bundle: x509bundle.FromX509Authorities(td, up.CA.Roots()), TokenFile: tokenFile, SVIDFile: svidFile, Clock: clk})
	require.NoError(t, err)
	go func() { done <- c.Run(ctx) }()

	read := func() string { b, _ := os.ReadFile(svidFile); return string(b) }
	require.Eventually(t, func() bool { return read() != "" && clk.HasWaiters() }, 10*time.Second, 5*time.Millisecond)
	first := read()
	require.NoError(t, os.Remove(tokenFile))
	clk.Step(13 * time.Hour)
	require.Eventually(t, func() bool { return read() != first }, 10*time.Second, 5*time.Millisecond, "renewed at half life")
}
