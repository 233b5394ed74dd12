package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/catest"
)

// BenchmarkSignFloor is bare x509.CreateCertificate, the baseline for
// BenchmarkCreateCertificateMTLS in the same run.
func BenchmarkSignFloor(b *testing.B) { catest.BenchmarkFloor(b) }

// BenchmarkCreateCertificateMTLS is a renewal as an agent does it: one
// long-lived mTLS connection on loopback, the current SVID as credential, a
// fresh CSR each time (CSR verification, SVID verification and signing).
func BenchmarkCreateCertificateMTLS(b *testing.B) {
	f := newFixture(b)
	svid := f.ca.SVID(b, "spiffe://example.org/ns/default/sa/web", time.Hour)
	client := f.dial(b, svid)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := &pb.IstioCertificateRequest{Csr: csrPEM(b, key, "")}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.CreateCertificate(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
