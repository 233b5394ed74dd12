// Package pebbletest starts a real Pebble ACME CA and pebble-challtestsrv on loopback
// ports for tests, the way net/http/httptest starts a server. The binaries come from
// test/tools/pebble.sh (cache dir ${CERTMESH_TOOLS:-$HOME/.cache/certmesh/bin}) or PATH.
package pebbletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Options tunes one Pebble.
type Options struct {
	// EAB maps kid → base64url HMAC key; non-empty makes EAB required.
	EAB map[string]string
	// NonceReject is PEBBLE_WFE_NONCEREJECT (percent of good nonces refused).
	NonceReject int
	// Blocklist lists domains pebble refuses to issue for.
	Blocklist []string
	// Validity of issued certificates (default 90 days).
	Validity time.Duration
}

// Pebble is a running Pebble plus challtestsrv.
type Pebble struct {
	DirectoryURL  string
	ManagementURL string
	// ChallSrvURL is challtestsrv's management API, DNSAddr its DNS server.
	ChallSrvURL string
	DNSAddr     string
	// HTTPPort and TLSPort are where the VA connects for HTTP-01 and TLS-ALPN-01.
	HTTPPort, TLSPort int
	// TLSRoot is the PEM root of pebble's own HTTPS listener.
	TLSRoot []byte
	dir     string
}

// Start runs challtestsrv and pebble and stops both in t.Cleanup. It fails the test
// when the binaries are missing.
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	pebbleBin, challBin := binaries(t)
	p := &Pebble{dir: t.TempDir()}
	ports := freePorts(t, 6)
	p.DNSAddr = addr(ports[0])
	p.ChallSrvURL = "http://" + addr(ports[1])
	p.HTTPPort, p.TLSPort = ports[2], ports[3]
	p.DirectoryURL = "https://" + addr(ports[4]) + "/dir"
	p.ManagementURL = "https://" + addr(ports[5])
	start(t, challBin, nil, "-dnsserver", p.DNSAddr, "-management", addr(ports[1]),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	cfgPath := p.writeConfig(t, opts, ports[4], ports[5])
	// PEBBLE_AUTHZREUSE=0 still reuses a valid authorization of the same account
	// one order in a hundred: v2.10.1 creates a new one when rand.Intn(100) > 0
	// (wfe.go:1565), and refuses negative values. A test that needs every order
	// to be challenged must use an account with no valid authorization.
	env := []string{
		"PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0",
		"PEBBLE_WFE_NONCEREJECT=" + strconv.Itoa(opts.NonceReject),
	}
	start(t, pebbleBin, env, "-config", cfgPath, "-dnsserver", p.DNSAddr, "-strict=false")
	p.waitReady(t)
	return p
}

func binaries(t testing.TB) (string, string) {
	t.Helper()
	dir := os.Getenv("CERTMESH_TOOLS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "certmesh", "bin")
	}
	find := func(name string) string {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
		p, err := exec.LookPath(name)
		require.NoError(t, err, "%s not found in %s or PATH: run test/tools/pebble.sh first", name, dir)
		return p
	}
	return find("pebble"), find("pebble-challtestsrv")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// freePorts finds n free loopback ports by binding and releasing them.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		require.NoError(t, ln.Close())
	}
	return ports
}

// start runs a binary and kills exactly that process at cleanup.
func start(t testing.TB, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func (p *Pebble) writeConfig(t testing.TB, opts Options, port, mgmt int) string {
	t.Helper()
	certFile, keyFile := p.writeTLSCert(t)
	validity := opts.Validity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	cfg := map[string]any{
		"listenAddress":                  addr(port),
		"managementListenAddress":        addr(mgmt),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       p.HTTPPort,
		"tlsPort":                        p.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": len(opts.EAB) > 0,
		"externalAccountMACKeys":         opts.EAB,
		"domainBlocklist":                opts.Blocklist,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{
			"default": map[string]any{"description": "test", "validityPeriod": int(validity / time.Second)},
		},
	}
	data, err := json.Marshal(map[string]any{"pebble": cfg})
	require.NoError(t, err)
	path := filepath.Join(p.dir, "pebble.json")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// writeTLSCert makes a fresh self-signed cert for pebble's listener (the bundled one
// expires in 2027).
func (p *Pebble) writeTLSCert(t testing.TB) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	p.TLSRoot = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile := filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, p.TLSRoot, 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

// String describes the instance for failure messages.
func (p *Pebble) String() string { return fmt.Sprintf("pebble %s", p.DirectoryURL) }
