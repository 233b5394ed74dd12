package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/pebbletest"
	"github.com/certmesh/certmesh/test/harness"
)

// The mesh of the test: who runs as which uid, and the identities the
// registrations file gives them.
const (
	trustDomain     = "example.org"
	host            = "shop.example.test" // shop.<domain>: challtestsrv resolves every name to 127.0.0.1
	uidGateway      = 5101
	uidBackend      = 5102
	uidIntruder     = 5103
	uidUnregistered = 5104
	gatewayID       = "spiffe://example.org/ns/shop/sa/gateway"
	backendID       = "spiffe://example.org/ns/shop/sa/backend"
	intruderID      = "spiffe://example.org/ns/shop/sa/intruder"
	appReply        = "hello from the shop backend"
)

// chain is the whole path on one machine.
type chain struct {
	pebble      *pebbletest.Pebble
	dir         string // certmesh state directory
	devArgs     []string
	dev         *harness.Proc
	socket      string // unix://…/agent.sock
	metricsAddr string
	app         *app
	sidecar     string // backend's ghostunnel (mTLS, Workload API)
	wire        *tap   // between gateway and sidecar: what an eavesdropper on the hop sees
	gateway     string // gateway's ghostunnel client (plain in, mTLS out)
	edge        string // edge TLS terminator (public certificate)
	edgeProc    *harness.Proc
	rootFile    string // Pebble's root: what a browser would trust
	ghostunnel  string
}

type chainOpts struct {
	svidTTL time.Duration
}

// startChain starts Pebble, certmesh dev with the edge flags, the app and the
// three proxies, and returns once a request goes through end to end.
func startChain(t testing.TB, opts chainOpts) *chain {
	t.Helper()
	requireRoot(t)
	c := &chain{ghostunnel: toolForUids(t, "ghostunnel", "test/tools/ghostunnel.sh")}
	c.pebble = pebbletest.Start(t, pebbletest.Options{})
	c.dir = harness.StateDir(t)
	c.rootFile = filepath.Join(c.dir, "pebble-root.pem")
	require.NoError(t, os.WriteFile(c.rootFile, c.pebble.Root(t), 0o644))
	c.startDev(t, opts)
	c.waitEdgeFiles(t, 60*time.Second)

	c.app = startApp(t)
	c.sidecar = c.startSidecar(t)
	c.wire = startTap(t, c.sidecar)
	c.gateway = c.startGateway(t, uidGateway, c.wire.addr())
	c.edge, c.edgeProc = c.startEdge(t, c.gateway)
	c.waitThrough(t, 30*time.Second)
	return c
}

func (c *chain) writeRegistrations(t testing.TB) string {
	t.Helper()
	p := filepath.Join(c.dir, "registrations.yaml")
	require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(`trustDomain: %s
workloads:
  - spiffeID: spiffe://%s/test/runner
    uid: 0
  - spiffeID: %s
    uid: %d
    edgeCertificates: [%s]
  - spiffeID: %s
    uid: %d
  - spiffeID: %s
    uid: %d
`, trustDomain, trustDomain, gatewayID, uidGateway, host, backendID, uidBackend, intruderID, uidIntruder)), 0o644))
	return p
}

func (c *chain) startDev(t testing.TB, opts chainOpts) {
	t.Helper()
	caBundle := filepath.Join(c.dir, "pebble-listener.pem")
	require.NoError(t, os.WriteFile(caBundle, c.pebble.TLSRoot, 0o644))
	c.metricsAddr = freeAddr(t)
	ttl := opts.svidTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	c.devArgs = []string{"dev", "--dir", c.dir, "--trust-domain", trustDomain,
		"--registrations", c.writeRegistrations(t), "--listen", "127.0.0.1:0",
		"--svid-ttl", ttl.String(), "--metrics", c.metricsAddr,
		"--acme-directory", c.pebble.DirectoryURL, "--acme-email", "ops@example.com", "--acme-ca-bundle", caBundle,
		"--edge-domain", host, "--http01-addr", "127.0.0.1:" + strconv.Itoa(c.pebble.HTTPPort)}
	c.restartDev(t)
}

// restartDev (re)starts certmesh dev on the same state directory.
func (c *chain) restartDev(t testing.TB) {
	t.Helper()
	if c.dev != nil {
		_ = c.dev.Stop()
	}
	c.dev = harness.Start(t, harness.Spec{Name: "certmesh dev", Path: harness.Binary(t), Args: c.devArgs})
	c.socket = c.dev.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
}

func (c *chain) edgeFile(name string) string { return filepath.Join(c.dir, "edge", host, name) }

func (c *chain) waitEdgeFiles(t testing.TB, timeout time.Duration) {
	t.Helper()
	harness.Poll{Timeout: timeout, Every: 100 * time.Millisecond, Detail: c.dev.String}.WaitFor(t, "an edge certificate", func() bool {
		return harness.FileExists(c.edgeFile("tls.key")) && harness.FileExists(c.edgeFile("tls.crt"))
	})
}

// edgeLeaf is the leaf certmesh stored for the host.
func (c *chain) edgeLeaf(t testing.TB) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(c.edgeFile("tls.crt"))
	require.NoError(t, err)
	blk, _ := pem.Decode(b)
	require.NotNil(t, blk)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	return cert
}

func (c *chain) startSidecar(t testing.TB) string {
	t.Helper()
	addr := freeAddr(t)
	harness.Start(t, harness.Spec{Name: "sidecar (backend)", Path: c.ghostunnel, UID: uidBackend, Args: []string{"server",
		"--listen", addr, "--target", c.app.addr(), "--use-workload-api-addr", c.socket,
		"--allow-uri", gatewayID, "--quiet", "conns"}})
	return addr
}

// startGateway runs a ghostunnel client as uid, dialing target with its SVID
// and accepting only the backend's SPIFFE ID.
func (c *chain) startGateway(t testing.TB, uid int, target string) string {
	t.Helper()
	addr := freeAddr(t)
	harness.Start(t, harness.Spec{Name: fmt.Sprintf("gateway (uid %d)", uid), Path: c.ghostunnel, UID: uid, Args: []string{"client",
		"--listen", addr, "--target", target, "--use-workload-api-addr", c.socket,
		"--verify-uri", backendID, "--quiet", "conns"}})
	return addr
}

// startEdge terminates public TLS with the certificate certmesh wrote,
// re-reading the files every second so a renewal is picked up.
func (c *chain) startEdge(t testing.TB, target string) (string, *harness.Proc) {
	t.Helper()
	addr := freeAddr(t)
	p := harness.Start(t, harness.Spec{Name: "edge terminator", Path: c.ghostunnel, Args: []string{"server",
		"--listen", addr, "--target", target, "--cert", c.edgeFile("tls.crt"), "--key", c.edgeFile("tls.key"),
		"--disable-authentication", "--timed-reload", "1s", "--quiet", "conns"}})
	return addr, p
}

// client is what a browser does: trust Pebble's root, ask for the host name,
// and (here) open a new connection per request so every hop handshakes anew.
func (c *chain) client(t testing.TB, keepAlive bool) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	root, err := os.ReadFile(c.rootFile)
	require.NoError(t, err)
	require.True(t, pool.AppendCertsFromPEM(root))
	edge := c.edge
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, edge)
		},
	}}
}

func (c *chain) url() string { return "https://" + host + "/" }

// get does one request and returns the body.
func get(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("status %s", resp.Status)
	}
	return string(body), nil
}

// waitThrough polls until a request passes the whole chain (the proxies need
// a moment to get their SVIDs over the Workload API).
func (c *chain) waitThrough(t testing.TB, timeout time.Duration) {
	t.Helper()
	hc := c.client(t, false)
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		var body string
		if body, err = get(hc, c.url()); err == nil {
			require.Equal(t, appReply, body)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no request went through within %s: %v\n%s", timeout, err, c.dev)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// app is the plain HTTP backend on loopback; it records who called it.
type app struct {
	srv *http.Server
	lis net.Listener
	mu  sync.Mutex
	// remotes are the RemoteAddrs of every request.
	remotes []string
}

func startApp(t testing.TB) *app {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a := &app{lis: lis}
	a.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.remotes = append(a.remotes, r.RemoteAddr)
		a.mu.Unlock()
		_, _ = io.WriteString(w, appReply)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.srv.Serve(lis) }()
	t.Cleanup(func() { _ = a.srv.Close(); <-done })
	return a
}

func (a *app) addr() string { return a.lis.Addr().String() }

func (a *app) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.remotes...)
}
