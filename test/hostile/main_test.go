// Package hostile is the hostile suite of issue 12, "Identities that can be
// taken back": each test is one attack on the real certmesh binaries — a
// stolen SVID renewed after its entry is removed, an evicted or banned node,
// reserved and unscoped registrations, a huge RSA CSR, forged bundle
// acknowledgements — and asserts the refusal by its gRPC code and by its
// counted reason (certmesh_ca_refusals_total{reason} from --metrics), then
// that an honest request still succeeds. test/DRILLS.md lists them in its
// "Hostile suite" table (TestDrillsTable keeps the two in step).
//
// The tests run as root: workloads run as other uids so that their
// identities come from attestation. CERTMESH_BIN=path runs the suite
// against another certmesh binary (an older build, to see it fail there).
package hostile

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
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
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

const svidPkg = "github.com/certmesh/certmesh/test/hostile/svid"

func TestMain(m *testing.M) { os.Exit(harness.Main(m, harness.CertmeshPkg, svidPkg)) }

var td = spiffeid.RequireTrustDomainFromString("example.org")

// IDs the attacks use.
const (
	webID  = "spiffe://example.org/ns/default/sa/web"
	dbID   = "spiffe://example.org/ns/default/sa/db"
	nodeN1 = "spiffe://example.org/certmesh/node/n1"
	nodeN9 = "spiffe://example.org/certmesh/node/n9" // the node the test plays itself
)

// caProc is a running `certmesh server` or `certmesh dev`.
type caProc struct {
	*harness.Proc
	bin, dir, addr, metrics string
	socket                  string // dev's Workload API socket (unix://...)
	bundle                  *x509bundle.Bundle
}

// startCA runs `certmesh server` (or dev) on 127.0.0.1 with --metrics and
// waits until it serves.
func startCA(t *testing.T, cmd, regs string, extra ...string) *caProc {
	t.Helper()
	c := &caProc{bin: harness.Binary(t), dir: harness.StateDir(t), addr: freeAddr(t), metrics: freeAddr(t)}
	args := []string{cmd, "--dir", c.dir, "--trust-domain", "example.org", "--listen", c.addr, "--metrics", c.metrics}
	if regs != "" {
		args = append(args, "--registrations", regs)
	}
	c.Proc = harness.Start(t, harness.Spec{Name: "certmesh " + cmd, Path: c.bin, Args: append(args, extra...)})
	if cmd == "dev" {
		c.WaitLine(t, "certmesh dev: CA on ", 30*time.Second)
		c.socket = c.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
	} else {
		c.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	}
	c.bundle = c.fetchBundle(t)
	return c
}

func (c *caProc) fetchBundle(t *testing.T) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Parse(td, []byte(c.cli(t, "ca", "bundle")))
	require.NoError(t, err)
	return b
}

// cli runs `certmesh args… --dir DIR` and fails the test if it fails.
func (c *caProc) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.tryCLI(args...)
	require.NoError(t, err, "certmesh %s: %s", strings.Join(args, " "), out)
	return out
}

func (c *caProc) tryCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.bin, append(args, "--dir", c.dir)...).CombinedOutput()
	return string(out), err
}

// token creates a join token for id.
func (c *caProc) token(t *testing.T, id string) string {
	t.Helper()
	return strings.TrimSpace(c.cli(t, "token", "create", "--id", id, "--ttl", "5m"))
}

// dial connects to the CA's listener, presenting svid (nil: no client
// certificate) and expecting the server's ID.
func (c *caProc) dial(t *testing.T, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	authz := tlsconfig.AuthorizeID(wire.ServerID(td))
	conf := tlsconfig.TLSClientConfig(c.bundle, authz)
	if svid != nil {
		conf = tlsconfig.MTLSClientConfig(svid, c.bundle, authz)
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// sign asks for a certificate over conn: for the caller's own identity, or
// (as a node agent) for impersonate. It returns the SVID with its new key.
func sign(ctx context.Context, conn *grpc.ClientConn, impersonate string) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return signCSR(ctx, conn, impersonate, csrPEM(key), key)
}

func signCSR(ctx context.Context, conn *grpc.ClientConn, impersonate string, csr []byte, key crypto.Signer) (*x509svid.SVID, error) {
	req := &pb.IstioCertificateRequest{Csr: string(csr)}
	if impersonate != "" {
		md, err := structpb.NewStruct(map[string]any{wire.ImpersonatedIdentityKey: impersonate})
		if err != nil {
			return nil, err
		}
		req.Metadata = md
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, req)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return x509svid.Parse([]byte(strings.Join(resp.GetCertChain(), "")), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

func csrPEM(key crypto.Signer) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// bearer is a context carrying a bearer token, as a joining agent sends it.
func bearer(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), wire.AuthorizationKey, "Bearer "+tok)
}

// join redeems a join token for id with a CSR of the test's own, as an
// agent does, and returns the SVID.
func (c *caProc) join(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	svid, err := sign(bearer(c.token(t, id)), c.dial(t, nil), "")
	require.NoError(t, err, "joining as %s\n%s", id, c)
	require.Equal(t, id, svid.ID.String())
	return svid
}

// refusals is the CA's certmesh_ca_refusals_total{reason} (0 when absent).
func (c *caProc) refusals(t *testing.T, reason string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	prefix := fmt.Sprintf("certmesh_ca_refusals_total{reason=%q} ", reason)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	require.NoError(t, sc.Err())
	return 0
}

// refused runs an attack and asserts its refusal: the gRPC code, and one
// more certmesh_ca_refusals_total{reason} than before.
func (c *caProc) refused(t *testing.T, code codes.Code, reason string, attack func() error) {
	t.Helper()
	before := c.refusals(t, reason)
	err := attack()
	require.Equal(t, code.String(), status.Code(err).String(), "want %s (%s), got %v", code, reason, err)
	require.Equal(t, before+1, c.refusals(t, reason), "certmesh_ca_refusals_total{reason=%q} counts the refusal", reason)
}

// workloadSVID fetches uid's X.509-SVID and key from the Workload API
// socket, running the svid program as uid: what that workload holds.
func workloadSVID(t *testing.T, uid int, socket string) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Build(t, svidPkg), "-socket", socket)
	cmd.SysProcAttr = harness.SysProcAttr(uid)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "uid %d: %s", uid, stderr.String())
	svid, err := x509svid.Parse(out, out)
	require.NoError(t, err)
	return svid
}

// freeAddr is a free 127.0.0.1 port.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
}

// signAs asks the CA for a certificate with svid as the client
// certificate: for svid's own ID, or (as a node agent) for impersonate.
func signAs(t *testing.T, c *caProc, svid *x509svid.SVID, impersonate string) (*x509svid.SVID, error) {
	t.Helper()
	return sign(context.Background(), c.dial(t, svid), impersonate)
}
