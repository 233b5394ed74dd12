package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/edge"
)

const diagName = "shop.example.test"

// diagRig is a healthy edge certificate: a server that knows it, a name that
// resolves, an HTTP-01 path that answers, and matching files. Each test
// breaks one of them.
type diagRig struct {
	d      *diagnoser
	status server.Status
	down   error // the admin socket's error, when set
	names  map[string][]string
	leaf   certParams
}

type certParams struct {
	names     []string
	notBefore time.Time
	notAfter  time.Time
}

func newDiagRig(t *testing.T) *diagRig {
	t.Helper()
	now := time.Now()
	http01 := httptest.NewServer(http.NotFoundHandler()) // what certmesh's responder answers to an unknown token
	t.Cleanup(http01.Close)
	_, port, err := net.SplitHostPort(http01.Listener.Addr().String())
	require.NoError(t, err)
	r := &diagRig{
		names: map[string][]string{diagName: {"127.0.0.1"}},
		leaf:  certParams{names: []string{diagName}, notBefore: now.Add(-time.Hour), notAfter: now.Add(60 * 24 * time.Hour)},
		status: server.Status{Edge: []server.EdgeCertificate{{CertStatus: edge.CertStatus{
			Name: diagName, DNSNames: []string{diagName}, Issuer: "default", NotAfter: now.Add(60 * 24 * time.Hour), Orders: 1,
		}}}},
	}
	r.d = &diagnoser{
		name: diagName, dir: t.TempDir(), now: now, http01Port: port,
		status: func(context.Context) (server.Status, error) { return r.status, r.down },
		lookup: func(_ context.Context, host string) ([]string, error) {
			if a, ok := r.names[host]; ok {
				return a, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
		// Every name dials the test's HTTP server, as DNS would send it there.
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, p, _ := net.SplitHostPort(addr)
			var dl net.Dialer
			return dl.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", p))
		}}},
	}
	return r
}

// writeFiles stores a certificate and key as certmesh does.
func (r *diagRig) writeFiles(t *testing.T, p certParams, keyMode os.FileMode) (certPath, keyPath string) {
	t.Helper()
	dir := filepath.Join(r.d.dir, "edge", diagName)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: p.names[0]}, DNSNames: p.names,
		NotBefore: p.notBefore, NotAfter: p.notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), keyMode))
	require.NoError(t, os.Chmod(keyPath, keyMode))
	return certPath, keyPath
}

func failed(findings []finding) []finding {
	var out []finding
	for _, f := range findings {
		if !f.OK {
			out = append(out, f)
		}
	}
	return out
}

func TestDiagnoseHealthyCertificate(t *testing.T) {
	r := newDiagRig(t)
	r.writeFiles(t, r.leaf, 0o600)
	findings := r.d.run(context.Background())
	require.Empty(t, failed(findings), "%+v", findings)
	var steps []string
	for _, f := range findings {
		steps = append(steps, f.Step)
	}
	require.Equal(t, []string{stepServer, stepIssuer, stepDNS, stepHTTP01, stepACME, stepFiles, stepExpired}, steps, "every check runs, in an expert's order")
	var out bytes.Buffer
	require.NoError(t, printFindings(&out, diagName, findings, "text"))
	require.Contains(t, out.String(), "diagnosis: nothing wrong found")
}

// TestDiagnoseExplainsOneBrokenThing breaks exactly one thing per case and
// expects exactly that step to fail, with that explanation.
func TestDiagnoseExplainsOneBrokenThing(t *testing.T) {
	retryAt := time.Now().Add(3 * time.Hour)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, r *diagRig)
		step    string
		want    []string // substrings of the failing step's detail
	}{
		{"no server running", func(t *testing.T, r *diagRig) { r.down = errors.New("dial unix: no such file") },
			stepServer, []string{"no certmesh server answers"}},
		{"name not configured", func(t *testing.T, r *diagRig) { r.status.Edge = nil },
			stepIssuer, []string{"no edge certificate named " + diagName}},
		{"no issuer", func(t *testing.T, r *diagRig) { r.status.Edge[0].Issuer = "" },
			stepIssuer, []string{"names no ACME issuer"}},
		{"name does not resolve", func(t *testing.T, r *diagRig) { delete(r.names, diagName) },
			stepDNS, []string{diagName + " does not resolve"}},
		{"HTTP-01 path unreachable", func(t *testing.T, r *diagRig) { r.d.http01Port = closedPort(t) },
			stepHTTP01, []string{"nothing answers http://" + diagName}},
		{"rate limited", func(t *testing.T, r *diagRig) {
			err := fmt.Errorf("%w: %w", edge.ErrRateLimited, &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:rateLimited", Detail: "too many certificates"})
			r.status.Edge[0].Error, r.status.Edge[0].ErrorType, r.status.Edge[0].RetryAt, r.status.Edge[0].Failures = err.Error(), edge.ErrorType(err), retryAt, 1
		}, stepACME, []string{"rate-limits", retryAt.Format(time.RFC3339)}},
		{"rate limited, older server without errorType", func(t *testing.T, r *diagRig) {
			r.status.Edge[0].Error = "acme: error: 429 :: POST :: https://ca/new-order :: urn:ietf:params:acme:error:rateLimited :: slow down"
			r.status.Edge[0].RetryAt = retryAt
		}, stepACME, []string{"rate-limits"}},
		{"other ACME error", func(t *testing.T, r *diagRig) {
			r.status.Edge[0].Error, r.status.Edge[0].ErrorType, r.status.Edge[0].Failures = "challenge failed: connection refused", "connection", 4
		}, stepACME, []string{"failed (4 in a row)", "connection refused"}},
		{"certificate file missing", func(t *testing.T, r *diagRig) {
			c, _ := r.writeFiles(t, r.leaf, 0o600)
			require.NoError(t, os.Remove(c))
		}, stepFiles, []string{"tls.crt does not exist"}},
		{"key file missing", func(t *testing.T, r *diagRig) {
			_, k := r.writeFiles(t, r.leaf, 0o600)
			require.NoError(t, os.Remove(k))
		}, stepFiles, []string{"tls.key does not exist"}},
		{"key does not match", func(t *testing.T, r *diagRig) {
			_, k := r.writeFiles(t, r.leaf, 0o600)
			other := filepath.Join(t.TempDir(), "x")
			r2 := &diagRig{d: &diagnoser{dir: other}}
			_, k2 := r2.writeFiles(t, r.leaf, 0o600)
			b, err := os.ReadFile(k2)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(k, b, 0o600))
		}, stepFiles, []string{"does not match the key"}},
		{"wrong name in certificate", func(t *testing.T, r *diagRig) {
			p := r.leaf
			p.names = []string{"other.example.test"}
			r.writeFiles(t, p, 0o600)
		}, stepFiles, []string{"does not cover " + diagName}},
		{"key readable by others", func(t *testing.T, r *diagRig) { r.writeFiles(t, r.leaf, 0o644) },
			stepFiles, []string{"readable by others"}},
		{"expired", func(t *testing.T, r *diagRig) {
			p := r.leaf
			p.notBefore, p.notAfter = time.Now().Add(-90*24*time.Hour), time.Now().Add(-time.Hour)
			r.writeFiles(t, p, 0o600)
		}, stepExpired, []string{"expired at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newDiagRig(t)
			if tt.step != stepFiles {
				r.writeFiles(t, r.leaf, 0o600)
			}
			tt.breakIt(t, r)
			bad := failed(r.d.run(context.Background()))
			require.Len(t, bad, 1, "exactly one step fails: %+v", bad)
			require.Equal(t, tt.step, bad[0].Step)
			for _, w := range tt.want {
				require.Contains(t, bad[0].Detail, w)
			}
			require.NotEmpty(t, bad[0].Fix, "a failed step says what to do")
		})
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	require.NoError(t, l.Close())
	return port
}

func TestDiagnoseCommandExitsNonZeroOnProblems(t *testing.T) {
	dir := t.TempDir() // no server, no files
	var out bytes.Buffer
	err := runDiagnose(context.Background(), []string{"edge", diagName, "--dir", dir, "--timeout", "1s", "--http01-port", closedPort(t)}, &out)
	require.ErrorIs(t, err, errProblemsFound)
	require.Contains(t, out.String(), "[FAIL] server: no certmesh server answers")
	require.Contains(t, out.String(), "diagnosis: no certmesh server answers")

	err = runDiagnose(context.Background(), []string{"oops"}, &out)
	require.Error(t, err)
	require.NotErrorIs(t, err, errProblemsFound)
}
