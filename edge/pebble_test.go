package edge

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/lego"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/pebbletest"
)

func TestPebbleHTTP01(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p, httpSpec("web", "web.example.test", "www.example.test"))
	m := r.start(t)
	sv := waitServed(t, m, "web")

	require.ElementsMatch(t, []string{"web.example.test", "www.example.test"}, sv.Leaf().DNSNames)
	root := p.Root(t)
	verifyChain(t, sv, root, "www.example.test")
	opensslVerify(t, sv, root)
	info, err := os.Stat(filepath.Join(r.cfg.Dir, "web", FileKey))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	st := m.Status()[0]
	require.NoError(t, st.LastError)
	require.Equal(t, 1, st.Orders)
	require.True(t, st.NextRenewal.After(time.Now()))
}

func TestPebbleDNS01WildcardAndApex(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p,
		dnsSpec(p, "plain", "dns.example.test"),
		dnsSpec(p, "wild", "*.wild.example.test", "wild.example.test"))
	r.cfg.HTTP01Addr, r.cfg.TLSALPN01Addr = "", ""
	m := r.start(t)

	root := p.Root(t)
	verifyChain(t, waitServed(t, m, "plain"), root, "dns.example.test")
	wild := waitServed(t, m, "wild")
	verifyChain(t, wild, root, "anything.wild.example.test")
	verifyChain(t, wild, root, "wild.example.test")
}

func TestPebbleTLSALPN01(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	spec := httpSpec("alpn", "alpn.example.test")
	spec.Solver.Type = TLSALPN01
	r := newRig(t, p, spec)
	r.cfg.HTTP01Addr = ""
	m := r.start(t)
	verifyChain(t, waitServed(t, m, "alpn"), p.Root(t), "alpn.example.test")
}

func TestPebbleEAB(t *testing.T) {
	const kid, hmac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	p := pebbletest.Start(t, pebbletest.Options{EAB: map[string]string{kid: hmac}})
	t.Run("given", func(t *testing.T) {
		r := newRig(t, p, httpSpec("eab", "eab.example.test"))
		iss := r.cfg.Issuers["pebble"]
		iss.EAB = &EAB{KID: kid, HMAC: hmac}
		r.cfg.Issuers["pebble"] = iss
		waitServed(t, r.start(t), "eab")
	})
	t.Run("missing", func(t *testing.T) {
		r := newRig(t, p, httpSpec("eab", "eab.example.test"))
		st := waitStatus(t, r.start(t), "eab", func(s CertStatus) bool { return s.LastError != nil })
		require.ErrorContains(t, st.LastError, "externalAccountRequired")
		require.False(t, st.RetryAt.IsZero())
	})
}

func TestPebbleRenewalByARI(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p, httpSpec("ari", "ari.example.test"))
	m := r.start(t)
	first := waitServed(t, m, "ari")

	now := time.Now()
	p.SetRenewalInfo(t, first.Leaf(), now.Add(-time.Minute), now.Add(-time.Second))
	waitFor(t, m, 20*time.Second, func() bool {
		sv, _ := m.Lookup("ari")
		return !sv.Leaf().Equal(first.Leaf())
	})
	orders := r.orders.snapshot()
	require.Len(t, orders, 2)
	require.NotContains(t, orders[0], "replaces")
	require.NotEmpty(t, orders[1]["replaces"], "a renewal order names the certificate it replaces")
}

func TestPebbleRevocationRenews(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p, httpSpec("rev", "rev.example.test"))
	m := r.start(t)
	first := waitServed(t, m, "rev")

	revoke(t, r, first)
	require.Equal(t, "Revoked", p.CertStatus(t, first.Leaf()))
	waitFor(t, m, 20*time.Second, func() bool {
		sv, _ := m.Lookup("rev")
		return !sv.Leaf().Equal(first.Leaf())
	})
	require.Equal(t, ReasonARIWindow, m.Status()[0].Reason)
}

// revoke revokes sv with the manager's own account, as an operator would.
func revoke(t *testing.T, r *rig, sv Served) {
	t.Helper()
	acct, err := accountStore{store: FileStore{Dir: r.cfg.Dir}}.load(context.Background(), "pebble", r.cfg.Issuers["pebble"], cryptoRand)
	require.NoError(t, err)
	lc := lego.NewConfig(acct)
	lc.CADirURL = r.p.DirectoryURL
	lc.HTTPClient = r.p.HTTPClient()
	client, err := lego.NewClient(lc)
	require.NoError(t, err)
	require.NoError(t, client.Certificate.Revoke(sv.CertPEM))
}

func TestPebbleBadNonceStorm(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{NonceReject: 40})
	r := newRig(t, p, httpSpec("nonce", "nonce.example.test"))
	waitServed(t, r.start(t), "nonce")
}

func TestPebbleChallengeFailsOldCertStays(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	r := newRig(t, p, httpSpec("down", "down.example.test"))
	ctx, cancel := context.WithCancel(context.Background())
	m1, err := New(r.cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- m1.Run(ctx) }()
	first := waitServed(t, m1, "down")
	cancel()
	require.NoError(t, <-done)

	// Ask for renewal now, with nobody answering HTTP-01, from a new ACME account:
	// Pebble would otherwise now and then reuse the first order's valid
	// authorization and renew without a challenge (see pebbletest's env).
	require.NoError(t, os.RemoveAll(filepath.Join(r.cfg.Dir, "accounts")))
	now := time.Now()
	p.SetRenewalInfo(t, first.Leaf(), now.Add(-time.Minute), now.Add(-time.Second))
	r.cfg.HTTP01Addr = ""
	m2 := r.start(t)
	st := waitStatus(t, m2, "down", func(s CertStatus) bool { return s.Failures >= 2 })
	require.ErrorIs(t, st.LastError, ErrChallengeFailed)
	require.True(t, st.RetryAt.After(now))
	sv, ok := m2.Lookup("down")
	require.True(t, ok, "the old certificate keeps being served")
	require.True(t, sv.Leaf().Equal(first.Leaf()))
}

func TestPebbleBlockedDomain(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{Blocklist: []string{"blocked.example.test"}})
	r := newRig(t, p, httpSpec("blocked", "blocked.example.test"))
	obs := &recordingObserver{}
	r.cfg.Observer = obs
	st := waitStatus(t, r.start(t), "blocked", func(s CertStatus) bool { return s.LastError != nil })
	require.ErrorIs(t, st.LastError, ErrRejectedIdentifier)
	require.ErrorContains(t, st.LastError, "blocked.example.test")
	require.Eventually(t, func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.failed) > 0 && errors.Is(obs.failed[0], ErrRejectedIdentifier)
	}, 10*time.Second, 10*time.Millisecond, "the Observer hears of the failure (the Ingress controller turns it into an Event)")
}

// opensslVerify checks the chain with openssl, the way an operator would.
func opensslVerify(t *testing.T, sv Served, root []byte) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	require.NoError(t, err, "openssl is needed to cross-check the chain")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o600))
		return path
	}
	rootFile := write("root.pem", root)
	chainFile := write("chain.pem", sv.CertPEM)
	leafFile := write("leaf.pem", sv.CertPEM) // openssl verify reads the first cert
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "verify", "-CAfile", rootFile, "-untrusted", chainFile, leafFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "OK")
}
