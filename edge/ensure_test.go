package edge

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/pebbletest"
)

// recordingRouter records Route/Unroute calls.
type recordingRouter struct {
	mu    *sync.Mutex
	calls *[]string
}

func (r recordingRouter) Route(_ context.Context, domain, token, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.calls = append(*r.calls, "route "+domain)
	return nil
}

func (r recordingRouter) Unroute(_ context.Context, domain, token string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.calls = append(*r.calls, "unroute "+domain)
	return nil
}

// recordingObserver records what the Manager reports.
type recordingObserver struct {
	mu       sync.Mutex
	stored   []string
	restored []string
	failed   []error
}

func (o *recordingObserver) CertificateStored(name string, _ Served, restored bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if restored {
		o.restored = append(o.restored, name)
	} else {
		o.stored = append(o.stored, name)
	}
}

func (o *recordingObserver) CertificateFailed(_ string, err error, _ time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = append(o.failed, err)
}

func TestPebbleEnsureRouteRestoreRemove(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p)
	obs := &recordingObserver{}
	r.cfg.Observer = obs
	m := r.start(t)

	var calls []string
	spec := httpSpec("shop/web-tls", "web.example.test")
	spec.Solver.HTTP01Router = recordingRouter{mu: &sync.Mutex{}, calls: &calls}
	require.NoError(t, m.Ensure(spec))
	require.NoError(t, m.Ensure(spec), "an identical spec is a no-op")
	first := waitServed(t, m, "shop/web-tls")
	require.Equal(t, []string{"route web.example.test", "unroute web.example.test"}, calls)
	require.Equal(t, []string{"shop/web-tls"}, obs.stored)

	// The stored copy disappears: Resync writes the served one back, no new order.
	// (Only tls.crt: the loop steps every ARIPoll and may restore mid-RemoveAll.)
	require.NoError(t, os.Remove(filepath.Join(r.cfg.Dir, "shop", "web-tls", FileCert)))
	m.Resync("shop/web-tls")
	require.Eventually(t, func() bool {
		sv, err := FileStore{Dir: r.cfg.Dir}.LoadCertificate(context.Background(), "shop/web-tls")
		return err == nil && sv.Leaf().Equal(first.Leaf())
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, m.Status()[0].Orders)

	m.Remove("shop/web-tls")
	_, ok := m.Lookup("shop/web-tls")
	require.False(t, ok)
	require.Empty(t, m.Status())
}

func TestEnsureValidates(t *testing.T) {
	m, err := New(Config{Dir: t.TempDir(), Issuers: map[string]IssuerConfig{"le": {DirectoryURL: "https://x"}}})
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		spec CertificateSpec
	}{
		{name: "bad name", spec: CertificateSpec{Name: "Shop/X", DNSNames: []string{"a"}, Issuer: "le", Solver: SolverConfig{Type: HTTP01}}},
		{name: "two slashes", spec: CertificateSpec{Name: "a/b/c", DNSNames: []string{"a"}, Issuer: "le", Solver: SolverConfig{Type: HTTP01}}},
		{name: "unknown issuer", spec: CertificateSpec{Name: "a/b", DNSNames: []string{"a"}, Issuer: "x", Solver: SolverConfig{Type: HTTP01}}},
		{name: "no names", spec: CertificateSpec{Name: "a/b", Issuer: "le", Solver: SolverConfig{Type: HTTP01}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, m.Ensure(tc.spec), ErrInvalidConfig)
		})
	}
	require.NoError(t, m.EnsureIssuer("x", IssuerConfig{DirectoryURL: "https://y"}))
	require.NoError(t, m.Ensure(CertificateSpec{Name: "a/b", DNSNames: []string{"a"}, Issuer: "x", Solver: SolverConfig{Type: HTTP01}}))
	require.Equal(t, []string{"a/b"}, m.Names())
	require.ErrorIs(t, m.EnsureIssuer("bad", IssuerConfig{}), ErrInvalidConfig)
}
