// Package catest makes a real certmesh CA and SVIDs for tests in one line.
package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
)

// Epoch is the fake clock's start: the real time when the test binary
// started, so that verifiers that read the wall clock (TLS stacks, openssl)
// agree with certificates issued at fake-clock time zero.
var Epoch = time.Now().Truncate(time.Second)

// CA is a test CA with its fake clock.
type CA struct {
	*ca.CA
	Clock *clocktesting.FakeClock
	Dir   string
}

// New creates a CA for td in a fresh temporary directory with a fake clock.
func New(t testing.TB, td string, opts ...func(*ca.Config)) *CA {
	t.Helper()
	clk := clocktesting.NewFakeClock(Epoch)
	dir := filepath.Join(t.TempDir(), "ca")
	cfg := ca.Config{Dir: dir, TrustDomain: spiffeid.RequireTrustDomainFromString(td), Clock: clk}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := ca.New(cfg)
	require.NoError(t, err)
	return &CA{CA: c, Clock: clk, Dir: dir}
}

// SVID signs a fresh P-256 key for id (a SPIFFE ID string) and returns it as
// a go-spiffe SVID.
func (c *CA) SVID(t testing.TB, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString(id), TTL: ttl})
	require.NoError(t, err)
	return ToSVID(t, leaf, key)
}

// ToSVID turns a signed leaf and its key into a go-spiffe SVID (leaf and
// intermediate, as presented in a handshake).
func ToSVID(t testing.TB, leaf *ca.Leaf, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range leaf.Chain[:len(leaf.Chain)-1] {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	require.NoError(t, err)
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}
