package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

// BenchmarkCAServerPerCore measures signing through the gRPC service as an
// agent renews (mTLS with its current SVID, a CSR each time) against a
// `certmesh server` process, and divides by the server's own CPU time
// (from /proc), so client work on the same machine does not count: leaves
// per second per core of the server. The floor — bare
// x509.CreateCertificate with a P-256 key — is timed in the same run.
func BenchmarkCAServerPerCore(b *testing.B) {
	floor := floorMicros(b, 2000)
	addr, dir, pid := startServerProcess(b)
	client := renewalClient(b, addr, dir)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	req := &pb.IstioCertificateRequest{Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	cpu0 := cpuSeconds(b, pid)
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			if _, err := client.CreateCertificate(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	perLeaf := (cpuSeconds(b, pid) - cpu0) / float64(b.N) * 1e6
	b.ReportMetric(floor, "floor-us/leaf")
	b.ReportMetric(perLeaf, "server-cpu-us/leaf")
	b.ReportMetric(1e6/perLeaf, "leaves/s/core")
	b.ReportMetric(floor/perLeaf, "ratio-to-floor")
}

func floorMicros(b *testing.B, n int) float64 {
	f, err := catest.NewFloor()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for range n {
		if err := f.Sign(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Microseconds()) / float64(n)
}

func startServerProcess(b *testing.B) (addr, dir string, pid int) {
	dir = harness.StateDir(b)
	p := harness.Start(b, harness.Spec{Name: "certmesh server", Path: certmesh(b),
		Args: []string{"server", "--dir", dir, "--trust-domain", "example.org", "--listen", "127.0.0.1:0"}})
	for {
		line := p.WaitLine(b, "", 30*time.Second)
		if _, rest, ok := strings.Cut(line, " listening on "); ok {
			addr, _, _ = strings.Cut(rest, " ")
			return addr, dir, p.Pid()
		}
	}
}

// renewalClient joins with a token, then returns a client that presents the
// SVID it got, as a renewing agent does.
func renewalClient(b *testing.B, addr, dir string) pb.IstioCertificateServiceClient {
	id := spiffeid.RequireFromString("spiffe://example.org/bench/client")
	tok, err := exec.Command(certmesh(b), "token", "create", "--dir", dir, "--id", id.String(), "--ttl", "1m").Output()
	if err != nil {
		b.Fatal(err)
	}
	bundlePEM, err := exec.Command(certmesh(b), "ca", "bundle", "--dir", dir).Output()
	if err != nil {
		b.Fatal(err)
	}
	roots, err := ca.ParseCertsPEM(bundlePEM)
	if err != nil {
		b.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	authz := tlsconfig.AuthorizeID(wire.ServerID(id.TrustDomain()))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, authz))))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	if err != nil {
		b.Fatal(err)
	}
	var certs []*x509.Certificate
	for _, p := range resp.CertChain[:len(resp.CertChain)-1] {
		c, err := ca.ParseCertsPEM([]byte(p))
		if err != nil {
			b.Fatal(err)
		}
		certs = append(certs, c...)
	}
	svid := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	mconn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, bundle, authz))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mconn.Close() })
	return pb.NewIstioCertificateServiceClient(mconn)
}

// cpuSeconds is a process's user+system CPU time from /proc/<pid>/stat.
func cpuSeconds(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the ")" that ends the command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 per second).
	_, rest, _ := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}
