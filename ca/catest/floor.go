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

// Floor signs SVID-shaped leaves with bare x509.CreateCertificate and a
// P-256 issuer key: the physical floor every signing path is compared to.
type Floor struct {
	issuer    *x509.Certificate
	issuerKey *ecdsa.PrivateKey
	leafKey   *ecdsa.PrivateKey
	uri       *url.URL
	serial    int64
	now       time.Time
}

// NewFloor makes the issuer and leaf keys once.
func NewFloor() (*Floor, error) {
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, issuerKey.Public(), issuerKey)
	if err != nil {
		return nil, err
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse("spiffe://example.org/ns/default/sa/web")
	return &Floor{issuer: issuer, issuerKey: issuerKey, leafKey: leafKey, uri: u, serial: 1, now: now}, nil
}

// Sign creates one leaf.
func (f *Floor) Sign() error {
	f.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(f.serial), NotBefore: f.now, NotAfter: f.now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, URIs: []*url.URL{f.uri}}
	_, err := x509.CreateCertificate(rand.Reader, tmpl, f.issuer, f.leafKey.Public(), f.issuerKey)
	return err
}

// BenchmarkFloor runs Floor.Sign as a benchmark body.
func BenchmarkFloor(b *testing.B) {
	f, err := NewFloor()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Sign(); err != nil {
			b.Fatal(err)
		}
	}
}
