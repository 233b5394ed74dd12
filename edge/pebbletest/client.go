package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// challengePause lets pebble's VA (PEBBLE_VA_NOSLEEP) finish before lego polls the
// authorization; lego polls once at once and then waits Retry-After (5 s when pebble
// sends none), so without it every issuance costs seconds.
const challengePause = 30 * time.Millisecond

// finalizePause keeps lego's first order poll away from pebble's asynchronous
// finalizer. Pebble v2.10.1's order handler takes the order's read lock twice
// (wfe.go:2069, then 1864 via orderForDisplay); when the finalizer asks for the
// write lock in between (ca.go:474), both wait forever (letsencrypt/pebble#554):
// the certificate is issued but never attached, and lego's poll hangs until the
// response-header timeout. lego polls right after finalize, ignoring
// Retry-After, so about one order in two thousand met it; with the pause the
// finalizer has almost always finished first. It narrows the window, it cannot
// close it: the edge Manager's retry (a new order) still covers the rest.
const finalizePause = 50 * time.Millisecond

// HTTPClient trusts pebble's listener and applies the challenge and finalize
// pauses. Its response-header timeout must stay at least lego's certificate wait
// (30 s): a second poll of an order wedged by pebble#554 freezes all of pebble.
func (p *Pebble) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.TLSRoot)
	base := &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost:   64,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	// No Client.Timeout: lego leaves HEAD bodies unclosed, which would pin a timer
	// goroutine per request and trip goleak.
	return &http.Client{Transport: pauseTransport{next: base}}
}

type pauseTransport struct{ next http.RoundTripper }

func (t pauseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost {
		return resp, err
	}
	if strings.Contains(req.URL.Path, "/finalize-order/") {
		select {
		case <-time.After(finalizePause):
		case <-req.Context().Done():
		}
		return resp, nil
	}
	if !strings.Contains(req.URL.Path, "/chalZ/") {
		return resp, nil
	}
	if resp.Header.Get("Retry-After") == "" {
		resp.Header.Set("Retry-After", "1")
	}
	select {
	case <-time.After(challengePause):
	case <-req.Context().Done():
	}
	return resp, nil
}

// waitReady polls the directory until pebble answers, for at most 10 s.
func (p *Pebble) waitReady(t testing.TB) {
	t.Helper()
	hc := p.HTTPClient()
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 0; attempt < 400; attempt++ {
		resp, err := hc.Get(p.DirectoryURL)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && p.challReady(hc) {
				return
			}
		}
		require.True(t, time.Now().Before(deadline), "pebble not ready: %v", err)
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("pebble not ready")
}

func (p *Pebble) challReady(hc *http.Client) bool {
	resp, err := hc.Post(p.ChallSrvURL+"/clear-txt", "application/json", strings.NewReader(`{"host":"ready.test."}`))
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Roots returns pebble's current root (PEM), new on every start.
func (p *Pebble) Root(t testing.TB) []byte {
	t.Helper()
	return p.get(t, p.ManagementURL+"/roots/0")
}

func (p *Pebble) get(t testing.TB, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := p.HTTPClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, body)
	return body
}

// CertStatus returns pebble's status of a serial ("Valid" or "Revoked").
func (p *Pebble) CertStatus(t testing.TB, cert *x509.Certificate) string {
	t.Helper()
	var out struct{ Status string }
	body := p.get(t, p.ManagementURL+"/cert-status-by-serial/"+cert.SerialNumber.Text(16))
	require.NoError(t, json.Unmarshal(body, &out))
	return out.Status
}

// SetRenewalInfo forces pebble's ARI answer for cert to the window [start, end].
func (p *Pebble) SetRenewalInfo(t testing.TB, cert *x509.Certificate, start, end time.Time) {
	t.Helper()
	ari, err := json.Marshal(map[string]any{"suggestedWindow": map[string]time.Time{"start": start, "end": end}})
	require.NoError(t, err)
	body, err := json.Marshal(map[string]string{
		"Certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		"ARIResponse": string(ari),
	})
	require.NoError(t, err)
	url := p.ManagementURL + "/set-renewal-info/"
	resp, err := p.HTTPClient().Post(url, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "set-renewal-info: %s", msg)
}

// VerifyChain checks a PEM chain (leaf first) against root for dnsName with Go's
// verifier and returns the leaf.
func VerifyChain(t testing.TB, root, chainPEM []byte, dnsName string) *x509.Certificate {
	t.Helper()
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(root))
	inter := x509.NewCertPool()
	var leaf *x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		if leaf == nil {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	require.NotNil(t, leaf, "no certificate in the chain")
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: dnsName})
	require.NoError(t, err)
	return leaf
}
