package catest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// HostileRSACSR is the CSR an attacker sends to make the CA verify a huge
// signature: an RSA key of bits bits and exponent e, and a signature that
// cannot verify. It is assembled by hand, as x509 refuses to write a CSR
// whose signature does not verify.
func HostileRSACSR(t testing.TB, bits, e int) []byte {
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
