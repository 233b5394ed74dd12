package hostile

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"google.golang.org/grpc/codes"
)

// TestAttackHugeRSACSR: a CSR with a 185,000-bit RSA key (and one with
// exponent 3) would make the CA spend its CPU on the signature; it is
// refused before (InvalidArgument, csr_rsa_key), promptly, and an honest
// P-256 CSR is signed after each.
func TestAttackHugeRSACSR(t *testing.T) {
	c := startCA(t, "server", "")
	for _, tt := range []struct {
		name    string
		bits, e int
	}{
		{name: "185,000-bit modulus", bits: 185_000, e: 65537},
		{name: "exponent 3", bits: 2048, e: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr := hostileRSACSR(t, tt.bits, tt.e)
			var took time.Duration
			ctx, conn := bearer(c.token(t, "spiffe://example.org/ns/default/sa/big")), c.dial(t, nil)
			c.refused(t, codes.InvalidArgument, "csr_rsa_key", func() error {
				start := time.Now()
				_, err := signCSR(ctx, conn, "", csr, nil)
				took = time.Since(start)
				return err
			})
			t.Logf("%s refused in %s", tt.name, took)
			require.Less(t, took, 5*time.Second, "refused before any costly work")
			_, err := sign(bearer(c.token(t, "spiffe://example.org/ns/default/sa/honest")), c.dial(t, nil), "")
			require.NoError(t, err, "an honest P-256 CSR after the attack")
		})
	}
}

// hostileRSACSR is ca/csr_test.go's: an RSA key of bits bits and exponent
// e with a signature that cannot verify, assembled by hand, as x509 refuses
// to write a CSR whose signature does not verify.
func hostileRSACSR(t testing.TB, bits, e int) []byte {
	t.Helper()
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Or(n, big.NewInt(1)) // odd, exactly bits long
	spki, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: e})
	require.NoError(t, err)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // CertificationRequestInfo
			b.AddASN1Int64(0)
			b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // empty subject
			b.AddBytes(spki)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(*cryptobyte.Builder) {})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}) // sha256WithRSAEncryption
			b.AddASN1NULL()
		})
		b.AddASN1BitString(make([]byte, (bits+7)/8))
	})
	der, err := b.Bytes()
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
