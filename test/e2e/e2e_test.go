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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

// TestEncryptedChain is the end-to-end proof. The subtests share one chain and
// run in order; the last one changes certificates under load.
func TestEncryptedChain(t *testing.T) {
	c := startChain(t, chainOpts{svidTTL: time.Minute}) // rotation at ~30 s
	curl := harness.Tool(t, "curl", "test/tools/install.sh")
	openssl := harness.Tool(t, "openssl", "test/tools/install.sh")
	appCalls := func() int { return len(c.app.seen()) }

	t.Run("curl gets the app's answer over the public certificate", func(t *testing.T) {
		public := startTap(t, c.edge)
		_, port, _ := net.SplitHostPort(public.addr())
		out, err := exec.Command(curl, "-sS", "--fail", "--max-time", "10", "--cacert", c.rootFile,
			"--resolve", host+":"+port+":127.0.0.1", "https://"+host+":"+port+"/").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, appReply, string(out))
		require.Equal(t, c.edgeLeaf(t).SerialNumber, servedLeaf(t, c.edge, host).SerialNumber, "the terminator serves what certmesh stored")
		requireEncrypted(t, public.recorded(), "GET /", appReply)
	})

	t.Run("the hop between the proxies is mTLS and the app sees only loopback", func(t *testing.T) {
		requireEncrypted(t, c.wire.recorded(), "GET /", "Host: "+host, appReply)
		seen := c.app.seen()
		require.NotEmpty(t, seen)
		for _, r := range seen {
			h, _, err := net.SplitHostPort(r)
			require.NoError(t, err)
			require.True(t, net.ParseIP(h).IsLoopback(), "the app was called from %s", r)
		}
		leaf := servedLeaf(t, c.sidecar, "")
		require.Equal(t, backendID, leaf.URIs[0].String(), "the sidecar presents the backend's SVID, from attestation of its uid")
	})

	t.Run("a caller with another identity is refused at the sidecar", func(t *testing.T) {
		before := appCalls()
		intruder := c.startGateway(t, uidIntruder, c.sidecar)
		_, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+intruder+"/")
		require.Error(t, err, "the sidecar must refuse %s", intruderID)

		c.requireNoSVID(t, uidUnregistered)

		files := c.spiffeHelper(t, uidIntruder)
		out := sClient(t, openssl, c.sidecar, files)
		require.Contains(t, out, "Verification: OK", "the client side is sound: full chain, server verified")
		require.NotContains(t, out, appReply)
		require.Contains(t, out, "alert", "the sidecar answers with a TLS alert: %s", out)
		require.Equal(t, before, appCalls(), "nothing reached the app")
	})

	t.Run("a caller without a certificate is refused at the sidecar", func(t *testing.T) {
		before := appCalls()
		out := sClient(t, openssl, c.sidecar, nil)
		require.NotContains(t, out, appReply)
		require.Contains(t, out, "alert", out)
		cout, err := exec.Command(curl, "-sS", "-k", "--max-time", "5", "https://"+c.sidecar+"/").CombinedOutput()
		require.Error(t, err, "curl without a certificate: %s", cout)
		require.Equal(t, before, appCalls(), "nothing reached the app")
	})

	t.Run("spiffe-helper's files let a file-based client in", func(t *testing.T) {
		files := c.spiffeHelper(t, uidGateway)
		out := sClient(t, openssl, c.sidecar, files)
		require.Contains(t, out, "Verification: OK", "the sidecar's SVID verifies against the bundle spiffe-helper wrote")
		require.Contains(t, out, appReply)
	})

	t.Run("metrics and health show what an operator needs", func(t *testing.T) {
		requireMetrics(t, "http://"+c.metricsAddr+"/metrics")
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get("http://" + c.metricsAddr + path)
			require.NoError(t, err)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s once the CA is loaded and the agent holds its SVIDs", path)
		}
	})

	t.Run("renewal and rotation under load fail no request", func(t *testing.T) {
		load := startLoad(t, c.client(t, false), c.url())
		sidecarBefore := servedLeaf(t, c.sidecar, "").SerialNumber
		harness.Poll{Timeout: 75 * time.Second, Every: 250 * time.Millisecond}.WaitFor(t, "the sidecar to present a rotated SVID", func() bool {
			return servedLeaf(t, c.sidecar, "").SerialNumber.Cmp(sidecarBefore) != 0
		})
		okAfterRotation := load.ok.Load()

		old := c.edgeLeaf(t)
		now := time.Now()
		c.pebble.SetRenewalInfo(t, old, now.Add(-2*time.Hour), now.Add(-time.Hour))
		// Pebble answers ARI with Retry-After: 6h, so a running certmesh would only
		// ask again in six hours: restart it (as an upgrade would) to ask now.
		c.restartDev(t)
		harness.Poll{Timeout: 60 * time.Second, Every: 250 * time.Millisecond}.WaitFor(t, "certmesh to store a renewed edge certificate", func() bool {
			return c.edgeLeaf(t).SerialNumber.Cmp(old.SerialNumber) != 0
		})
		renewed := c.edgeLeaf(t)
		harness.Poll{Timeout: 15 * time.Second, Every: 250 * time.Millisecond}.WaitFor(t, "the terminator to serve the renewed certificate", func() bool {
			return servedLeaf(t, c.edge, host).SerialNumber.Cmp(renewed.SerialNumber) == 0
		})
		time.Sleep(time.Second) // requests over the new certificate too
		load.stop()
		t.Logf("%d requests during the run (%d after the SVID rotation), %d failed", load.ok.Load()+load.failed.Load(), load.ok.Load()-okAfterRotation, load.failed.Load())
		require.Zero(t, load.failed.Load(), "failed requests: %v", load.errors())
		require.Greater(t, load.ok.Load()-okAfterRotation, int64(20), "requests kept flowing through the edge renewal")
	})

	t.Run("latency through the encrypted chain and a plain one", func(t *testing.T) {
		measureLatency(t, c)
	})
}

// servedLeaf dials addr and returns the certificate it presents, without
// verifying it or sending one (a refusal comes after the server's Finished).
func servedLeaf(t testing.TB, addr, serverName string) *tlsLeaf {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: serverName}) //nolint:gosec // only reads the peer's certificate
	require.NoError(t, err)
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	require.NotEmpty(t, certs)
	return certs[0]
}

type tlsLeaf = x509.Certificate

// svidFiles are the PEM files spiffe-helper writes.
type svidFiles struct{ cert, chain, key, bundle string }

// runHelper runs spiffe-helper once (daemon_mode = false) as uid, writing
// into a directory of that uid, and returns its output, error and directory.
func (c *chain) runHelper(t testing.TB, uid int, timeout time.Duration) (string, string, error) {
	t.Helper()
	helper := toolForUids(t, "spiffe-helper", "test/tools/ghostunnel.sh")
	dir := filepath.Join(c.dir, fmt.Sprintf("helper-%d", uid))
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.Chown(dir, uid, uid))
	conf := filepath.Join(dir, "helper.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`agent_address = %q
cert_dir = %q
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
daemon_mode = false
`, strings.TrimPrefix(c.socket, "unix://"), dir)), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, "-config", conf)
	cmd.SysProcAttr = harness.SysProcAttr(uid)
	out, err := cmd.CombinedOutput()
	return string(out), dir, err
}

// spiffeHelper runs spiffe-helper as uid and returns the files it wrote
// from the Workload API.
func (c *chain) spiffeHelper(t testing.TB, uid int) *svidFiles {
	t.Helper()
	out, dir, err := c.runHelper(t, uid, 20*time.Second)
	require.NoError(t, err, "spiffe-helper as uid %d: %s", uid, out)
	f := &svidFiles{cert: filepath.Join(dir, "svid.pem"), key: filepath.Join(dir, "svid_key.pem"), bundle: filepath.Join(dir, "svid_bundle.pem")}
	for _, p := range []string{f.cert, f.key, f.bundle} {
		require.True(t, harness.FileExists(p), "spiffe-helper did not write %s: %s", p, out)
	}
	// openssl sends only the first certificate of -cert: the intermediates
	// go in -cert_chain.
	certs, err := os.ReadFile(f.cert)
	require.NoError(t, err)
	var chain []byte
	for i, rest := 0, certs; ; i++ {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if i > 0 {
			chain = append(chain, pem.EncodeToMemory(blk)...)
		}
	}
	require.NotEmpty(t, chain, "spiffe-helper wrote the leaf without its intermediate")
	f.chain = filepath.Join(dir, "chain.pem")
	require.NoError(t, os.WriteFile(f.chain, chain, 0o600))
	return f
}

// requireNoSVID checks that a uid without a registration gets nothing from
// the Workload API: spiffe-helper keeps retrying (it is killed after 3 s)
// while the agent counts each refusal.
func (c *chain) requireNoSVID(t testing.TB, uid int) {
	t.Helper()
	refusals := func() float64 {
		return metricSum(t, "http://"+c.metricsAddr+"/metrics", "certmesh_workload_api_refusals_total")
	}
	before := refusals()
	out, dir, err := c.runHelper(t, uid, 3*time.Second)
	require.Error(t, err, "spiffe-helper as an unregistered uid must not succeed: %s", out)
	require.False(t, harness.FileExists(filepath.Join(dir, "svid.pem")), "an unregistered uid got an SVID")
	require.Greater(t, refusals(), before, "the agent refused the call (attestation), rather than it failing elsewhere: %s", out)
}

// metricSum scrapes url and adds up every sample of the metric family name.
func metricSum(t testing.TB, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		_, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		require.NoError(t, err, line)
		sum += v
	}
	return sum
}

// sClient sends one HTTP/1.0 request with openssl s_client (verifying the
// server against the bundle when files are given) and returns all output.
func sClient(t testing.TB, openssl, addr string, f *svidFiles) string {
	t.Helper()
	args := []string{"s_client", "-connect", addr, "-brief", "-ign_eof"}
	if f != nil {
		args = append(args, "-cert", f.cert, "-cert_chain", f.chain, "-key", f.key, "-CAfile", f.bundle, "-verify_return_error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, args...)
	cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: backend\r\n\r\n")
	out, _ := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "openssl s_client hung: %s", out)
	return string(out)
}

// load sends requests one after another through the chain, each on a new
// connection, and counts the outcomes.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	cancel     context.CancelFunc
	done       chan struct{}
}

func startLoad(t testing.TB, hc *http.Client, url string) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; i < 100000 && ctx.Err() == nil; i++ {
			body, err := get(hc, url)
			if err == nil && body != appReply {
				err = fmt.Errorf("unexpected body %q", body)
			}
			if err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if len(l.errs) < 20 {
					l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(l.stop)
	return l
}

func (l *load) stop() { l.cancel(); <-l.done }

func (l *load) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// requireMetrics scrapes url and checks every series the operability issue
// names is exported.
func requireMetrics(t testing.TB, url string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	for _, name := range []string{
		"certmesh_agent_svid_expiry_timestamp_seconds{",        // expiry per mesh identity
		"certmesh_agent_svid_not_before_timestamp_seconds{",    // … and how much of its life is used
		"certmesh_edge_certificate_expiry_timestamp_seconds{",  // expiry per edge certificate
		"certmesh_ca_svids_issued_total{",                      // issuance counts
		"certmesh_agent_svid_renewals_total",                   // renewal counts
		"certmesh_ca_signing_duration_seconds_bucket{",         // issuance latency
		"certmesh_agent_svid_request_duration_seconds_bucket{", // renewal latency
		"certmesh_edge_orders_total{",                          // ACME orders
		"certmesh_edge_certificate_consecutive_failures{",      // ACME failures
		"certmesh_workload_api_refusals_total{",                // refusals by reason (the unregistered uid)
		"certmesh_sds_envoy_streams_open",                      // SDS streams open
		"certmesh_workload_api_streams_open{",                  // Workload API streams open
		"certmesh_sds_envoy_pushes_total", "certmesh_sds_envoy_nacks_total",
		"certmesh_ca_authority_phase{", // CA rotation phase
		"certmesh_ca_root_expiry_timestamp_seconds{",
	} {
		require.Contains(t, text, name, "/metrics lacks %s", name)
	}
	require.Contains(t, text, `certmesh_ca_authority_phase{authority=`, text)
	require.Regexp(t, `certmesh_workload_api_streams_open\{method="[^"]+"\} [1-9]`, text, "the proxies hold Workload API streams open")
}
