package catest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// BenchmarkFloor measures the physical floor of signing: bare
// x509.CreateCertificate of an SVID-shaped leaf with a P-256 issuer key.
// Signing benchmarks report themselves as a ratio to it, from the same run.
func BenchmarkFloor(b *testing.B) {
	issuerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	issuer := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, issuer, issuer, issuerKey.Public(), issuerKey)
	if err != nil {
		b.Fatal(err)
	}
	if issuer, err = x509.ParseCertificate(der); err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org/ns/default/sa/web")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), NotBefore: now, NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, URIs: []*url.URL{u}}
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, leafKey.Public(), issuerKey); err != nil {
			b.Fatal(err)
		}
	}
}
