package drills

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"syscall"
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

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

// TestDrillHostileInput: 10,000 connections that send nothing, a 100 MB
// message, a CSR with 10,000 SANs and a 1 MB token, each against a live CA;
// each is refused with the right code and bounded, and an honest workload
// still gets its SVID at every step.
func TestDrillHostileInput(t *testing.T) {
	raiseFileLimit(t, 12000)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	dir := harness.StateDir(t)
	addr := freeAddr(t)
	// A separate process, so that its 10,000 sockets and ours each fit
	// under the per-process file limit.
	srv := start(t, 0, certmesh(t), "server", "--dir", dir, "--trust-domain", "example.org", "--listen", addr)
	srv.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	roots, err := ca.ParseCertsPEM([]byte(run(t, "ca", "bundle", "--dir", dir)))
	require.NoError(t, err)
	newToken := func(id string) string {
		return strings.TrimSpace(run(t, "token", "create", "--dir", dir, "--id", id, "--ttl", "1m"))
	}

	bundle := x509bundle.FromX509Authorities(td, roots)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(wire.ServerID(td))))))
	require.NoError(t, err)
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)
	honest := func(step string) {
		_, err := client.CreateCertificate(bearerCtx(newToken("spiffe://example.org/honest")), &pb.IstioCertificateRequest{Csr: csrWithSANs(t, 0)})
		require.NoError(t, err, "an honest workload must still be served %s", step)
	}

	idle := openIdle(t, addr, 10000)
	honest("while 10,000 idle connections are open")
	for _, c := range idle {
		_ = c.Close()
	}

	_, err = client.CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: strings.Repeat("A", 100<<20)})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "100 MB message: %v", err)
	honest("after a 100 MB message")

	_, err = client.CreateCertificate(bearerCtx(newToken("spiffe://example.org/sans")), &pb.IstioCertificateRequest{Csr: csrWithSANs(t, 10000)})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "CSR with 10,000 SANs: %v", err)
	honest("after a CSR with 10,000 SANs")

	_, err = client.CreateCertificate(bearerCtx(strings.Repeat("a", 1<<20)), &pb.IstioCertificateRequest{Csr: csrWithSANs(t, 0)})
	require.Contains(t, []codes.Code{codes.Unauthenticated, codes.ResourceExhausted, codes.Internal}, status.Code(err), "1 MB token: %v", err)
	require.NotEqual(t, codes.OK, status.Code(err))
	honest("after a 1 MB token")

	record(row{Drill: "7. hostile input", Injected: "10,000 idle connections; a 100 MB message; a CSR with 10,000 SANs; a 1 MB token",
		Ops: 4, Failed: 0, MustBeZero: true, Worst: "-", PeakMem: "-",
		Notes: fmt.Sprintf("refused: ResourceExhausted (256 KiB message limit), InvalidArgument (CSR limits), %s (token); an honest request succeeded after each", status.Code(err))})
}

func bearerCtx(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func csrWithSANs(t *testing.T, n int) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.CertificateRequest{}
	for i := range n {
		tmpl.DNSNames = append(tmpl.DNSNames, fmt.Sprintf("n%d.example.org", i))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// openIdle opens n TCP connections that never send a byte.
func openIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	return conns
}

func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < n {
		lim.Cur = max(n, lim.Cur)
		if lim.Max < n {
			lim.Max = n
		}
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim), "need %d open files for 10,000 connections", n)
	}
}
