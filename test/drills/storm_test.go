package drills

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/wire"
)

// TestDrillStartStorm: 2,000 workloads (each its own TLS connection and join
// token) ask for their first SVID within one second. All must get one; the
// server sheds what it cannot take with ResourceExhausted and retry advice,
// and its memory stays bounded.
func TestDrillStartStorm(t *testing.T) {
	const workloads = 2000
	td := spiffeid.RequireTrustDomainFromString("example.org")
	srv, err := server.New(server.Config{Dir: t.TempDir(), TrustDomain: td, Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	tokens := make([]string, workloads)
	for i := range tokens {
		tokens[i], _, err = srv.Tokens.Create(spiffeid.RequireFromString("spiffe://example.org/storm/w"+strconv.Itoa(i)), 5*time.Minute)
		require.NoError(t, err)
	}
	csr := stormCSR(t)
	bundle := x509bundle.FromX509Authorities(td, srv.CA.Roots())
	creds := credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(wire.ServerID(td))))

	peak := watchHeap(ctx)
	var shed atomic.Int64
	lat := make([]time.Duration, workloads)
	errs := make([]error, workloads)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * time.Second / workloads) // all within one second
			t0 := time.Now()
			errs[i] = firstSVID(srv.Addr(), creds, tokens[i], csr, &shed)
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	slices.Sort(lat)
	p99 := lat[workloads*99/100]
	record(row{Drill: "3. start storm", Injected: "2,000 workloads ask for a first SVID within 1 s (own TLS connection + join token each)",
		Ops: workloads, Failed: failed, MustBeZero: true, Worst: fmt.Sprintf("p99 %v, max %v", p99.Round(time.Millisecond), lat[workloads-1].Round(time.Millisecond)),
		PeakMem: fmt.Sprintf("%d MiB heap (server+clients)", peak()/(1<<20)),
		Notes:   fmt.Sprintf("all done in %v; %d requests shed with ResourceExhausted and retried as advised", wall.Round(time.Millisecond), shed.Load())})
	for _, e := range errs {
		require.NoError(t, e)
	}
}

func stormCSR(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// firstSVID is one workload's start: connect, present the token, and retry
// as the server advises when it sheds (bounded: 100 attempts).
func firstSVID(addr string, creds credentials.TransportCredentials, token, csr string, shed *atomic.Int64) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)
	for attempt := 0; attempt < 100; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		var trailer metadata.MD
		_, err = client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr}, grpc.Trailer(&trailer))
		cancel()
		if status.Code(err) != codes.ResourceExhausted {
			return err
		}
		shed.Add(1)
		ms, _ := strconv.Atoi(first(trailer.Get(wire.RetryAfterKey)))
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	return fmt.Errorf("still shed after 100 attempts: %w", err)
}

func first(v []string) string {
	if len(v) == 0 {
		return "100"
	}
	return v[0]
}

// watchHeap samples the heap every 10 ms until ctx ends; the returned
// function gives the peak seen.
func watchHeap(ctx context.Context) func() uint64 {
	var peak atomic.Uint64
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	return peak.Load
}
