package ca_test

import (
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

func TestNextIntermediateDue(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	week := 7 * 24 * time.Hour
	p := ca.IntermediatePolicy{TTL: week, MaxTTL: 24 * time.Hour}
	made := func(life time.Duration) ca.IntermediateLife { // certmesh-made at t0, root far away
		return ca.IntermediateLife{NotBefore: t0.Add(-ca.LeafBackdate), NotAfter: t0.Add(life), RootNotAfter: t0.Add(10 * 365 * 24 * time.Hour), Renewable: true}
	}
	tests := []struct {
		name    string
		now     time.Time
		cur     ca.IntermediateLife
		p       ca.IntermediatePolicy
		wantAt  time.Time
		wantDue bool
		why     string
	}{
		{name: "fresh: at half life", now: t0, cur: made(week), p: p, wantAt: t0.Add(week / 2)},
		{name: "just before half life", now: t0.Add(week/2 - time.Second), cur: made(week), p: p, wantAt: t0.Add(week / 2)},
		{name: "at half life: due", now: t0.Add(week / 2), cur: made(week), p: p, wantAt: t0.Add(week / 2), wantDue: true},
		{name: "late (server was down): due", now: t0.Add(week - time.Hour), cur: made(week), p: p, wantAt: t0.Add(week / 2), wantDue: true},
		{name: "year-long intermediate of an older version: brought into policy", now: t0.Add(4 * 24 * time.Hour), cur: made(365 * 24 * time.Hour), p: p, wantAt: t0.Add(week / 2), wantDue: true},
		{name: "made under a shorter max TTL: never shortens a leaf", now: t0, cur: made(week), p: ca.IntermediatePolicy{TTL: week, MaxTTL: 5 * 24 * time.Hour}, wantAt: t0.Add(2 * 24 * time.Hour)},
		{name: "3m CA TTL, 1m SVIDs", now: t0.Add(time.Minute), cur: made(3 * time.Minute), p: ca.IntermediatePolicy{TTL: 3 * time.Minute, MaxTTL: time.Minute}, wantAt: t0.Add(90 * time.Second)},
		{name: "bring-your-own root: never", now: t0.Add(week), cur: ca.IntermediateLife{NotBefore: t0, NotAfter: t0.Add(week), RootNotAfter: t0.Add(2 * week)}, p: p, why: ca.NotRenewableNoRootKey},
		{name: "clamped to the root: a successor gains nothing", now: t0.Add(week), cur: ca.IntermediateLife{NotBefore: t0.Add(-ca.LeafBackdate), NotAfter: t0.Add(2 * 24 * time.Hour), RootNotAfter: t0.Add(2 * 24 * time.Hour), Renewable: true}, p: p, why: ca.NotRenewableRootExpires},
		{name: "root ends soon after: renewed once more", now: t0, cur: ca.IntermediateLife{NotBefore: t0.Add(-ca.LeafBackdate), NotAfter: t0.Add(week), RootNotAfter: t0.Add(week + time.Hour), Renewable: true}, p: p, wantAt: t0.Add(week / 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ca.NextIntermediateDue(tt.now, tt.cur, tt.p)
			require.Equal(t, tt.why, got.NotRenewable)
			require.True(t, tt.wantAt.Equal(got.At), "at %v, want %v", got.At, tt.wantAt)
			require.Equal(t, tt.wantDue, got.Due)
		})
	}
}

func TestSwitchAndRetireIntermediate(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := ca.RotationState{Authorities: []ca.AuthorityState{{ID: "a", Phase: ca.PhaseActive}}}
	s1, err := s.SwitchIntermediate("a", "0f", t0.Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, s.Authorities[0].OldIntermediates, "pure: the input is unchanged")
	require.Equal(t, "0f", s1.Authorities[0].Intermediate)
	require.Equal(t, t0.Add(time.Hour), s1.NextEvent())
	_, err = s.SwitchIntermediate("b", "0f", t0)
	require.Error(t, err)

	same, changed := s1.Advance(t0.Add(time.Hour-time.Second), ca.RotationPolicy{})
	require.False(t, changed)
	require.Len(t, same.Authorities[0].OldIntermediates, 1)
	gone, changed := s1.Advance(t0.Add(time.Hour), ca.RotationPolicy{})
	require.True(t, changed)
	require.Empty(t, gone.Authorities[0].OldIntermediates)
	require.Equal(t, "0f", gone.Authorities[0].Intermediate)
}

func TestCATTLMustOutliveTwoSVIDs(t *testing.T) {
	_, err := ca.New(ca.Config{Dir: t.TempDir(), TrustDomain: td, MaxTTL: time.Hour, IntermediateTTL: 119 * time.Minute})
	require.ErrorIs(t, err, ca.ErrIntermediateTTL)
}

// TestAutomaticIntermediateRotation drives a CA with --ca-ttl 3m and 1m
// SVIDs through several renewals: the bundle never changes, every SVID
// verifies against it while it lives, and retired intermediates' files go.
func TestAutomaticIntermediateRotation(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.IntermediateTTL, cfg.MaxTTL, cfg.DefaultTTL = 3*time.Minute, time.Minute, time.Minute
	})
	bundle := c.BundlePEM()
	id := c.Status().Authorities[0].ID
	type issued struct {
		svid *x509svid.SVID
		end  time.Time
	}
	var live []issued
	issuers := map[string]bool{}
	for i := 0; i < 40; i++ { // 40 × 15 s = 10 min: 6 renewals
		svid := c.SVID(t, "spiffe://example.org/w", time.Minute)
		issuers[string(svid.Certificates[1].Raw)] = true
		live = append(live, issued{svid, svid.Certificates[0].NotAfter})
		require.Equal(t, time.Minute, svid.Certificates[0].NotAfter.Sub(c.Clock.Now()), "never shortened by its intermediate")
		c.Clock.Step(15 * time.Second)
		require.NoError(t, c.Advance())
		require.Equal(t, bundle, c.BundlePEM(), "the roots never change")
		kept := live[:0]
		for _, l := range live {
			if c.Clock.Now().Before(l.end) {
				_, _, err := x509svid.Verify(l.svid.Certificates, c.Bundle(), x509svid.WithTime(c.Clock.Now()))
				require.NoError(t, err)
				kept = append(kept, l)
			}
		}
		live = kept
		st := c.Status()
		require.Len(t, st.Authorities, 1)
		require.Equal(t, id, st.Authorities[0].ID)
		require.NotEmpty(t, st.Authorities[0].NextStepKind)
		require.True(t, st.Authorities[0].NextStep.After(c.Clock.Now()), "nothing left due after Advance")
		require.LessOrEqual(t, len(st.Authorities[0].OldIntermediates), 2)
		require.Zero(t, st.Overdue)
	}
	require.GreaterOrEqual(t, len(issuers), 6)

	files, err := filepath.Glob(filepath.Join(c.Dir, "authorities", id, "intermediate*"))
	require.NoError(t, err)
	st := c.Status().Authorities[0]
	require.Len(t, files, 2*(1+len(st.OldIntermediates)), "retired intermediates' files are removed: %v", files)

	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock, IntermediateTTL: 3 * time.Minute, MaxTTL: time.Minute, DefaultTTL: time.Minute})
	require.NoError(t, err, "a restart loads the renewed intermediate")
	require.Equal(t, st.IntermediateEnd, again.Status().Authorities[0].IntermediateEnd)
}

// TestRenewalCrashLeavesOldState: files of a renewal whose state was never
// written (a crash in between) are ignored on load and removed by the next
// committed step.
func TestRenewalCrashLeavesOldState(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.IntermediateTTL, cfg.MaxTTL, cfg.DefaultTTL = 3*time.Minute, time.Minute, time.Minute
	})
	id := c.Status().Authorities[0].ID
	dir := filepath.Join(c.Dir, "authorities", id)
	orphan := filepath.Join(dir, "intermediate-00ff.crt")
	require.NoError(t, os.WriteFile(orphan, []byte("half"), 0o644))
	before := c.Status().Authorities[0].IntermediateEnd
	again, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock, IntermediateTTL: 3 * time.Minute, MaxTTL: time.Minute, DefaultTTL: time.Minute})
	require.NoError(t, err)
	require.Equal(t, before, again.Status().Authorities[0].IntermediateEnd)
	c.Clock.Step(90 * time.Second)
	require.NoError(t, again.Advance())
	require.NoFileExists(t, orphan)
}

func TestRotationsKeepTheKeyType(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.KeyType = ca.KeyRSA3072 })
	reopened, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock}) // no key type given, as `ca rotate` offline
	require.NoError(t, err)
	_, err = reopened.Rotate()
	require.NoError(t, err)
	c.Clock.Step(ca.DefaultIntermediateTTL / 2)
	require.NoError(t, reopened.Advance()) // switches root and renews intermediates
	snap, err := ca.ReadSnapshot(c.Dir)
	require.NoError(t, err)
	require.Len(t, snap.Roots, 2)
	for _, a := range snap.Roots {
		for _, cert := range []*x509.Certificate{a.Root, a.Intermediate} {
			k, ok := cert.PublicKey.(*rsa.PublicKey)
			require.True(t, ok, "%T", cert.PublicKey)
			require.Equal(t, 3072, k.N.BitLen())
		}
	}
}
