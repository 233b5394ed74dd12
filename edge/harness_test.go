package edge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/challtestsrv"
	"github.com/certmesh/certmesh/edge/pebbletest"
)

// rig is one Manager wired to one Pebble.
type rig struct {
	p      *pebbletest.Pebble
	cfg    Config
	orders *orderRecorder
}

func newRig(t testing.TB, p *pebbletest.Pebble, specs ...CertificateSpec) *rig {
	t.Helper()
	rec := &orderRecorder{}
	hc := p.HTTPClient()
	hc.Transport = rec.wrap(hc.Transport)
	return &rig{p: p, orders: rec, cfg: Config{
		Dir:           t.TempDir(),
		Issuers:       map[string]IssuerConfig{"pebble": {DirectoryURL: p.DirectoryURL, Email: "ops@example.com", Profile: "default"}},
		Certificates:  specs,
		HTTP01Addr:    "127.0.0.1:" + strconv.Itoa(p.HTTPPort),
		TLSALPN01Addr: "127.0.0.1:" + strconv.Itoa(p.TLSPort),
		HTTPClient:    hc,
		ARIPoll:       100 * time.Millisecond,
		Backoff:       Backoff{Min: 200 * time.Millisecond, Max: time.Second},
	}}
}

func httpSpec(name string, names ...string) CertificateSpec {
	return CertificateSpec{Name: name, DNSNames: names, Issuer: "pebble", Solver: SolverConfig{Type: HTTP01}}
}

func dnsSpec(p *pebbletest.Pebble, name string, names ...string) CertificateSpec {
	return CertificateSpec{Name: name, DNSNames: names, Issuer: "pebble", Solver: SolverConfig{
		Type: DNS01, DNS: DNSSolverConfig{
			Provider:    challtestsrv.Name,
			Credentials: map[string]string{challtestsrv.EnvURL: p.ChallSrvURL},
			Resolvers:   []string{p.DNSAddr},
		},
	}}
}

// start builds and runs the Manager until the test ends.
func (r *rig) start(t testing.TB) *Manager {
	t.Helper()
	m, err := New(r.cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
	})
	return m
}

// waitFor waits on Changed until ok holds, for at most timeout.
func waitFor(t testing.TB, m *Manager, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for range 10000 {
		ch := m.Changed()
		if ok() {
			return
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // status changes do not signal Changed
		case <-deadline:
			t.Fatalf("condition not met within %s; status: %+v", timeout, m.Status())
		}
	}
}

// servedBound is how long waitServed waits for a certificate: past lego's own
// 30 s wait for an order's certificate, because against Pebble about one order
// in a couple of thousand stalls there and the Manager then retries with a new
// order. The stall is a Pebble v2.10.1 deadlock (pebble issue 554): the order
// poll handler read-locks the order twice (wfe.go:2069, then 1864 via
// orderForDisplay) and the asynchronous finalizer's order.Lock (ca.go:474) can
// slip in between, so that poll never answers; lego polls at once after
// finalize, which makes the overlap possible. The poll fails only at the
// transport's ResponseHeaderTimeout (30 s here). Keep that timeout no shorter
// than lego's wait: a second poll of the wedged order blocks inside Pebble's
// store lock and freezes the whole CA, where a new order still succeeds.
const servedBound = 60 * time.Second

// waitServed waits until name is served and returns it.
func waitServed(t testing.TB, m *Manager, name string) Served {
	t.Helper()
	waitFor(t, m, servedBound, func() bool { _, ok := m.Lookup(name); return ok })
	sv, _ := m.Lookup(name)
	return sv
}

// waitStatus waits until the status of name satisfies ok.
func waitStatus(t testing.TB, m *Manager, name string, ok func(CertStatus) bool) CertStatus {
	t.Helper()
	var got CertStatus
	waitFor(t, m, 20*time.Second, func() bool {
		for _, s := range m.Status() {
			if s.Name == name && ok(s) {
				got = s
				return true
			}
		}
		return false
	})
	return got
}

// orderRecorder keeps the payload of every order the CA created, to see
// "replaces" and to count orders.
type orderRecorder struct {
	mu     sync.Mutex
	orders []map[string]any
	next   http.RoundTripper
}

func (o *orderRecorder) wrap(next http.RoundTripper) http.RoundTripper {
	o.next = next
	return o
}

func (o *orderRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/order-plz") && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := o.next.RoundTrip(req)
		// Only an order the CA created counts: a newOrder refused with badNonce
		// (Pebble rejects some under concurrency) is resent by lego and is not
		// a second order.
		if err == nil && resp.StatusCode == http.StatusCreated {
			o.record(body)
		}
		return resp, err
	}
	return o.next.RoundTrip(req)
}

func (o *orderRecorder) record(body []byte) {
	var jws struct{ Payload string }
	if json.Unmarshal(body, &jws) != nil {
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return
	}
	var payload map[string]any
	if json.Unmarshal(raw, &payload) == nil {
		o.mu.Lock()
		o.orders = append(o.orders, payload)
		o.mu.Unlock()
	}
}

func (o *orderRecorder) snapshot() []map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]map[string]any(nil), o.orders...)
}

// verifyChain checks the served chain against pebble's root with Go.
func verifyChain(t testing.TB, sv Served, root []byte, dnsName string) {
	t.Helper()
	pebbletest.VerifyChain(t, root, sv.CertPEM, dnsName)
}
