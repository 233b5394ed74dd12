package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

var runnerID = spiffeid.RequireFromString("spiffe://example.org/test/runner")

func TestWorkloadAPIWithGoSPIFFEClient(t *testing.T) {
	t.Parallel()
	d := startDev(t, harness.StateDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(d.socket))
	require.NoError(t, err)
	defer client.Close()

	svid, err := client.FetchX509SVID(ctx)
	require.NoError(t, err)
	require.Equal(t, runnerID, svid.ID, "identity comes from this process's uid")
	bundles, err := client.FetchX509Bundles(ctx)
	require.NoError(t, err)
	_, _, err = x509svid.Verify(svid.Certificates, bundles)
	require.NoError(t, err)

	jwt, err := client.FetchJWTSVID(ctx, jwtParams("db"))
	require.NoError(t, err)
	require.Equal(t, runnerID, jwt.ID)
	validated, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "db")
	require.NoError(t, err)
	require.Equal(t, runnerID, validated.ID)
	_, err = client.ValidateJWTSVID(ctx, jwt.Marshal(), "someone-else")
	require.Error(t, err, "wrong audience")

	// A CA rotation reaches a watcher without any restart.
	updates := make(chan *workloadapi.X509Context, 8)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = client.WatchX509Context(wctx, watcher{updates}) }()
	first := <-updates
	require.Len(t, first.Bundles.Bundles()[0].X509Authorities(), 1)
	out, err := exec.Command(certmesh(t), "ca", "rotate", "--dir", d.dir).CombinedOutput()
	require.NoError(t, err, string(out))
	select {
	case next := <-updates:
		b, ok := next.Bundles.Get(runnerID.TrustDomain())
		require.True(t, ok)
		require.Len(t, b.X509Authorities(), 2, "the new root is published before it signs")
	case <-ctx.Done():
		t.Fatal("rotation did not reach the watcher")
	}
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w watcher) OnX509ContextWatchError(error)                  {}

func jwtParams(aud string) jwtsvid.Params { return jwtsvid.Params{Audience: aud} }

func TestMTLSBetweenTwoUids(t *testing.T) {
	t.Parallel()
	d := startDev(t, harness.StateDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server := harness.Start(t, harness.Spec{Name: "workload (serve)", Path: harness.Build(t, workloadPkg), UID: uidDB,
		Args: []string{"-mode", "serve", "-socket", d.socket, "-peer", "spiffe://example.org/ns/default/sa/web"}})
	addr := server.WaitLine(t, "listening ", 30*time.Second)

	out, err := runAs(ctx, t, uidWeb, "-mode", "dial", "-socket", d.socket, "-addr", addr, "-peer", "spiffe://example.org/ns/default/sa/db").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "identity spiffe://example.org/ns/default/sa/web")
	require.Contains(t, string(out), "reply hello spiffe://example.org/ns/default/sa/web, got ping")

	// The web workload refuses a server that is not db: the runner's own
	// identity is not what it asked for.
	out, err = runAs(ctx, t, uidWeb, "-mode", "dial", "-socket", d.socket, "-addr", addr, "-peer", "spiffe://example.org/ns/default/sa/other").CombinedOutput()
	require.Error(t, err, "dial must fail when the server's ID is not the expected one: %s", out)
}

func TestUnregisteredUidGetsNothing(t *testing.T) {
	t.Parallel()
	d := startDev(t, harness.StateDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := runAs(ctx, t, uidNoReg, "-mode", "fetch", "-socket", d.socket).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "PermissionDenied", string(out))
}

func TestOpenSSLHandshakeWithIssuedSVIDs(t *testing.T) {
	d := startDev(t, harness.StateDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(d.socket))
	require.NoError(t, err)
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(d.socket))
	require.NoError(t, err)
	dir := t.TempDir()
	certs, key, err := svid.Marshal()
	require.NoError(t, err)
	b, _ := bundles.Get(svid.ID.TrustDomain())
	bundlePEM, err := b.Marshal()
	require.NoError(t, err)
	var chainPEM []byte
	for _, c := range svid.Certificates[1:] {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	files := map[string][]byte{"svid.pem": certs, "key.pem": key, "bundle.pem": bundlePEM, "chain.pem": chainPEM}
	for name, data := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	port := freePort(t)
	// s_server ends at EOF on its stdin: keep it open for the handshake.
	stdin, keepOpen, err := os.Pipe()
	require.NoError(t, err)
	defer stdin.Close()
	defer keepOpen.Close()
	srv := harness.Start(t, harness.Spec{Name: "openssl s_server", Path: "openssl", Stdin: stdin,
		Args: []string{"s_server", "-accept", "127.0.0.1:" + port, "-cert", filepath.Join(dir, "svid.pem"), "-cert_chain", filepath.Join(dir, "chain.pem"),
			"-key", filepath.Join(dir, "key.pem"), "-CAfile", filepath.Join(dir, "bundle.pem"), "-Verify", "2", "-verify_return_error", "-naccept", "1"}})
	srv.WaitLine(t, "ACCEPT", 20*time.Second)

	cli := exec.CommandContext(ctx, "openssl", "s_client", "-connect", "127.0.0.1:"+port, "-cert", filepath.Join(dir, "svid.pem"), "-cert_chain", filepath.Join(dir, "chain.pem"),
		"-key", filepath.Join(dir, "key.pem"), "-CAfile", filepath.Join(dir, "bundle.pem"), "-verify_return_error", "-brief")
	cli.Stdin = strings.NewReader("hello\n")
	out, err := cli.CombinedOutput()
	require.NoError(t, err, "%s\nserver: %s", out, srv.Stderr())
	require.Contains(t, string(out), "Verification: OK")

	leaf, _ := pem.Decode(certs)
	cert, err := x509.ParseCertificate(leaf.Bytes)
	require.NoError(t, err)
	require.Equal(t, runnerID.String(), cert.URIs[0].String())
}

func TestRestartReusesTheCA(t *testing.T) {
	t.Parallel()
	dir := harness.StateDir(t)
	d := startDev(t, dir)
	before, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", dir).Output()
	require.NoError(t, err, "ca bundle works while dev runs")
	d.stop(t)
	startDev(t, dir)
	after, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", dir).Output()
	require.NoError(t, err)
	require.Equal(t, string(before), string(after))
}

func TestSecondServerOnSameDirRefused(t *testing.T) {
	t.Parallel()
	dir := harness.StateDir(t)
	startDev(t, dir)
	out, err := exec.Command(certmesh(t), "server", "--dir", dir, "--trust-domain", "example.org", "--listen", "127.0.0.1:0").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "in use by another certmesh server")
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestHelpExitsZero: asking for help is success; a bad flag is not.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"dev", "server", "agent"} {
		out, err := exec.Command(certmesh(t), cmd, "--help").CombinedOutput()
		require.NoError(t, err, "%s --help: %s", cmd, out)
		require.Contains(t, string(out), "-trust-domain")
	}
	err := exec.Command(certmesh(t), "dev", "--no-such-flag").Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 2, exit.ExitCode())
}
