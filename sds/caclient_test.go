package sds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

// TestParseAnswerVerifiesEveryLeaf: the CA certificates of answers are
// parsed once and reused, the bundle's root is recognized by its bytes, and
// still every answer's leaf is verified against the bundle.
func TestParseAnswerVerifiesEveryLeaf(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	good := catest.New(t, "example.org")
	other := catest.New(t, "example.org") // same trust domain, another root
	c := &caClient{td: td, bundles: x509bundle.FromX509Authorities(td, good.Roots())}
	web := spiffeid.RequireFromString("spiffe://example.org/web")

	answer := func(t *testing.T, from *catest.CA, id spiffeid.ID, tamper bool) ([]string, signRequest) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		leaf, err := from.Sign(ca.SignParams{PublicKey: key.Public(), ID: id, TTL: time.Hour})
		require.NoError(t, err)
		chain := leaf.ChainPEM()
		if tamper { // a leaf whose signature does not verify
			der := slices.Clone(leaf.Chain[0])
			der[len(der)-1] ^= 1
			chain[0] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		}
		return chain, signRequest{key: key, impersonate: web}
	}
	for _, tc := range []struct {
		name   string
		from   *catest.CA
		id     spiffeid.ID
		tamper bool
		ok     bool
	}{
		{name: "good", from: good, id: web, ok: true},
		{name: "good again, root from the cache", from: good, id: web, ok: true},
		{name: "leaf signature broken", from: good, id: web, tamper: true},
		{name: "another root", from: other, id: web},
		{name: "another identity", from: good, id: spiffeid.RequireFromString("spiffe://example.org/db")},
		{name: "good after the failures", from: good, id: web, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, req := answer(t, tc.from, tc.id, tc.tamper)
			svid, err := c.parseAnswer(chain, req)
			if !tc.ok {
				require.ErrorIs(t, err, ErrBadAnswer)
				return
			}
			require.NoError(t, err)
			require.Equal(t, web, svid.ID)
			require.Len(t, svid.Certificates, len(chain)-1, "the root stays in the bundle")
		})
	}
}
