package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
