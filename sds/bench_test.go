package sds_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/sds"
)

// BenchmarkFirstSVIDFloor is the least a fresh agent must do: one TLS
// connection to the CA and one CreateCertificate with its join token.
func BenchmarkFirstSVIDFloor(b *testing.B) {
	c := startCA(b, b.TempDir(), "127.0.0.1:0")
	bundle := x509bundle.FromX509Authorities(td, c.CA.Roots())
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	for b.Loop() {
		b.StopTimer()
		token, _, err := c.Tokens.Create(nodeID, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(wire.ServerID(td))))))
		if err != nil {
			b.Fatal(err)
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
		if _, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr}); err != nil {
			b.Fatal(err)
		}
		_ = conn.Close()
	}
}

// BenchmarkFirstSVID is the time from agent start to holding its own SVID
// and one workload's (node bootstrap by join token, then the workload's
// SVID over mTLS), against a real CA on loopback.
func BenchmarkFirstSVID(b *testing.B) {
	c := startCA(b, b.TempDir(), "127.0.0.1:0")
	for b.Loop() {
		b.StopTimer()
		token, _, err := c.Tokens.Create(nodeID, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		a, err := sds.New(sds.Config{TrustDomain: td, ServerAddr: c.addr, TrustBundle: c.CA.Roots(), Credential: sds.NewJoinToken(token), Workloads: []spiffeid.ID{web}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		go func() { done <- a.Run(ctx) }()
		select {
		case <-a.Ready():
		case <-time.After(10 * time.Second):
			b.Fatal("no SVID within 10s")
		}
		b.StopTimer()
		cancel()
		<-done
		b.StartTimer()
	}
}
