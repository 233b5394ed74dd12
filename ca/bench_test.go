package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

// BenchmarkSignFloor is bare x509.CreateCertificate; read BenchmarkSignDirect
// as a ratio to it.
func BenchmarkSignFloor(b *testing.B) { catest.BenchmarkFloor(b) }

// BenchmarkSignDirect signs through ca.Sign: TTL policy, serial, template,
// chain assembly, with the same key type as the floor.
func BenchmarkSignDirect(b *testing.B) {
	c := catest.New(b, "example.org")
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Sign(ca.SignParams{PublicKey: leafKey.Public(), ID: id}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCSRHonest is what an honest request costs to check: a
// P-256 CSR, parsed and its signature verified. The refusal benchmarks
// below read as ratios to it.
func BenchmarkParseCSRHonest(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	benchParseCSR(b, makeCSR(b, k, []string{"spiffe://example.org/ns/default/sa/web"}, nil), false)
}

// BenchmarkParseCSRHonestRSA2048 is Istio's agent's default request.
func BenchmarkParseCSRHonestRSA2048(b *testing.B) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	benchParseCSR(b, makeCSR(b, k, nil, nil), false)
}

// BenchmarkParseCSRRefusedHugeRSA is the worst refusal we could build: the
// largest RSA modulus that fits in a CSR under MaxCSRBytes (about 500,000
// bits), refused before its signature is checked.
func BenchmarkParseCSRRefusedHugeRSA(b *testing.B) {
	benchParseCSR(b, catest.HostileRSACSR(b, 8*(ca.MaxCSRBytes*3/4-1024)/2, 65537), true)
}

// BenchmarkParseCSRRefusedManySANs: a CSR full of SANs, at the size limit.
func BenchmarkParseCSRRefusedManySANs(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var dns []string
	for i := 0; len(dns)*24 < ca.MaxCSRBytes*3/4-1024; i++ {
		dns = append(dns, fmt.Sprintf("n%06d.example.org", i))
	}
	benchParseCSR(b, makeCSR(b, k, nil, dns), true)
}

func benchParseCSR(b *testing.B, csr []byte, refused bool) {
	b.Helper()
	if len(csr) > ca.MaxCSRBytes {
		b.Fatalf("CSR of %d bytes is over the limit", len(csr))
	}
	b.SetBytes(int64(len(csr)))
	for b.Loop() {
		if _, err := ca.ParseCSR(csr); (err != nil) != refused {
			b.Fatalf("refused=%v: %v", refused, err)
		}
	}
}
