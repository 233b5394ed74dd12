//go:build cgo

package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/pkcs11/pkcs11test"
)

// BenchmarkSignToken signs P-256 leaves with the intermediate in memory
// (the ECDSA fast path) and on a SoftHSM2 token (C_Sign through
// crypto.Signer), in the same run: read softhsm as a ratio to memory.
func BenchmarkSignToken(b *testing.B) {
	tk := pkcs11test.NewToken(b, "bench")
	cas := []struct {
		name string
		opt  func(*ca.Config)
	}{
		{"memory", func(*ca.Config) {}},
		{"softhsm", func(cfg *ca.Config) { cfg.IntermediateKeys, cfg.OpenKey = tk.Store(b), tk.Provider.OpenKey }},
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	for _, tc := range cas {
		b.Run(tc.name, func(b *testing.B) {
			c := catest.New(b, "example.org", tc.opt)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Sign(ca.SignParams{PublicKey: leafKey.Public(), ID: id}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
