package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// renew asks for a fresh SVID with svid as the only credential, as an
// agent renews, and returns the gRPC code.
func (f *fixture) renew(t *testing.T, svid *x509svid.SVID) codes.Code {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := f.dial(t, svid).CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	return status.Code(err)
}

func (f *fixture) requireRefused(t *testing.T, svid *x509svid.SVID, reason string) {
	t.Helper()
	before := testutil.ToFloat64(f.metrics.Refused(reason))
	require.Equal(t, codes.PermissionDenied, f.renew(t, svid))
	require.Equal(t, before+1, testutil.ToFloat64(f.metrics.Refused(reason)), "refusal counted as %s", reason)
}

// TestRenewalIsReauthorization: an SVID and its key renew only while the
// registration that granted the identity is still in force.
func TestRenewalIsReauthorization(t *testing.T) {
	f := newFixture(t)
	web := f.ca.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
	require.Equal(t, codes.OK, f.renew(t, web))

	path := f.regs.Status().File
	require.NoError(t, os.WriteFile(path, []byte("trustDomain: example.org\nworkloads: []\n"), 0o600))
	_, err := f.regs.Reload()
	require.NoError(t, err)
	f.requireRefused(t, web, "not_granted")

	stranger := f.ca.SVID(t, "spiffe://example.org/vm/never-granted", time.Hour)
	f.requireRefused(t, stranger, "not_granted")
}

// TestServerIDIsNeverAClient: the ID agents authenticate the CA by is
// refused as a caller's, even in a valid SVID.
func TestServerIDIsNeverAClient(t *testing.T) {
	f := newFixture(t)
	f.requireRefused(t, f.ca.SVID(t, "spiffe://example.org/certmesh/server", time.Hour), "reserved_id")
	f.requireRefused(t, f.ca.SVID(t, "spiffe://example.org/certmesh/other", time.Hour), "reserved_id")
}

// TestEvictedNodeLosesEverything: after an eviction the node's SVID renews
// nothing and impersonates no one; a new join token brings it back.
func TestEvictedNodeLosesEverything(t *testing.T) {
	f := newFixture(t)
	id := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n1")
	node := f.ca.SVID(t, id.String(), time.Hour)
	_, err := f.signFor(t, node, "spiffe://example.org/ns/default/sa/web")
	require.NoError(t, err)

	f.ca.Clock.Step(time.Second)
	_, err = f.nodes.Evict(id)
	require.NoError(t, err)
	f.requireRefused(t, node, "node_evicted")
	_, err = f.signFor(t, node, "spiffe://example.org/ns/default/sa/web")
	require.Equal(t, codes.PermissionDenied, status.Code(err), "no impersonation after eviction")

	f.ca.Clock.Step(2 * time.Second) // certificates carry whole seconds: rejoin from the next one
	tok, _, err := f.tokens.Create(id, time.Minute)
	require.NoError(t, err)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	resp, err := f.dial(t, nil).CreateCertificate(bearer(tok), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	require.NoError(t, err, "an evicted node may join again")
	rejoined := &x509svid.SVID{ID: id, Certificates: parseChain(t, resp.CertChain)[:2], PrivateKey: key}
	_, err = f.signFor(t, rejoined, "spiffe://example.org/ns/default/sa/web")
	require.NoError(t, err)
}

// TestBannedNodeCannotRejoin: a ban refuses the node's SVID and any new
// join token for its ID.
func TestBannedNodeCannotRejoin(t *testing.T) {
	f := newFixture(t)
	id := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n2")
	node := f.ca.SVID(t, id.String(), time.Hour)
	tok, _, err := f.tokens.Create(id, time.Minute)
	require.NoError(t, err)
	_, err = f.nodes.Ban(id)
	require.NoError(t, err)
	f.requireRefused(t, node, "node_banned")

	before := testutil.ToFloat64(f.metrics.Refused("node_banned"))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = f.dial(t, nil).CreateCertificate(bearer(tok), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, before+1, testutil.ToFloat64(f.metrics.Refused("node_banned")))
}

// TestTokenAndSVIDMustAgree: a caller presenting both credentials gets
// nothing when they name different identities.
func TestTokenAndSVIDMustAgree(t *testing.T) {
	f := newFixture(t)
	tok, _, err := f.tokens.Create(spiffeid.RequireFromString("spiffe://example.org/vm/a"), time.Minute)
	require.NoError(t, err)
	other := f.ca.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = f.dial(t, other).CreateCertificate(bearer(tok), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, 1.0, testutil.ToFloat64(f.metrics.Refused("credentials_disagree")))
}
