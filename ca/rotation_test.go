package ca_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

func TestRotationStateAdvance(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p := ca.RotationPolicy{Overlap: time.Hour, MaxLeafLifetime: 2 * time.Hour}
	steady := ca.RotationState{Authorities: []ca.AuthorityState{{ID: "old", Phase: ca.PhaseActive}}}
	prepared, err := steady.Prepare(t0, "new", p)
	require.NoError(t, err)
	_, err = prepared.Prepare(t0, "newer", p)
	require.ErrorIs(t, err, ca.ErrRotationInProgress)

	tests := []struct {
		name    string
		state   ca.RotationState
		now     time.Time
		changed bool
		want    map[string]ca.Phase
	}{
		{name: "steady stays", state: steady, now: t0.Add(100 * time.Hour), want: map[string]ca.Phase{"old": ca.PhaseActive}},
		{name: "prepared before overlap", state: prepared, now: t0.Add(59 * time.Minute), want: map[string]ca.Phase{"old": ca.PhaseActive, "new": ca.PhasePrepared}},
		{name: "switch at overlap", state: prepared, now: t0.Add(time.Hour), changed: true, want: map[string]ca.Phase{"old": ca.PhaseRetiring, "new": ca.PhaseActive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := tt.state.Advance(tt.now, p)
			require.Equal(t, tt.changed, changed)
			phases := map[string]ca.Phase{}
			for _, a := range got.Authorities {
				phases[a.ID] = a.Phase
			}
			require.Equal(t, tt.want, phases)
		})
	}

	switched, _ := prepared.Advance(t0.Add(time.Hour), p)
	require.Equal(t, t0.Add(3*time.Hour), switched.NextEvent(), "old root retires when its last leaf can have expired")
	stillThere, changed := switched.Advance(t0.Add(3*time.Hour-time.Second), p)
	require.False(t, changed)
	require.Len(t, stillThere.Authorities, 2)
	gone, changed := switched.Advance(t0.Add(3*time.Hour), p)
	require.True(t, changed)
	require.Len(t, gone.Authorities, 1)
	require.Equal(t, "new", gone.Authorities[0].ID)
}

// TestRotateEndToEnd walks a CA through every phase with a fake clock and
// checks that leaves from both authorities verify whenever they are alive.
func TestRotateEndToEnd(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.RotationOverlap = time.Hour
		cfg.MaxTTL = 2 * time.Hour
	})
	oldLeaf := c.SVID(t, "spiffe://example.org/a", 2*time.Hour)
	oldID := c.Status().Authorities[0].ID

	prep, err := c.Rotate()
	require.NoError(t, err)
	require.Equal(t, ca.PhasePrepared, prep.Phase)
	require.Len(t, c.Roots(), 2, "new root published first")
	_, err = c.Rotate()
	require.ErrorIs(t, err, ca.ErrRotationInProgress)

	stillOld := c.SVID(t, "spiffe://example.org/a", time.Hour)
	require.Equal(t, oldLeaf.Certificates[1].Raw, stillOld.Certificates[1].Raw, "no switch before the overlap")

	c.Clock.Step(time.Hour)
	require.NoError(t, c.Advance())
	require.Equal(t, "retiring", c.Status().Phase)
	newLeaf := c.SVID(t, "spiffe://example.org/a", time.Hour)
	require.NotEqual(t, oldLeaf.Certificates[1].Raw, newLeaf.Certificates[1].Raw, "signing switched")
	for _, s := range []*x509svid.SVID{oldLeaf, newLeaf} {
		_, _, err := x509svid.Verify(s.Certificates, c.Bundle(), x509svid.WithTime(c.Clock.Now()))
		require.NoError(t, err)
	}

	c.Clock.Step(2*time.Hour + 5*time.Minute)
	require.NoError(t, c.Advance())
	require.Len(t, c.Roots(), 1, "old root retired after its last leaf expired")
	require.Equal(t, "steady", c.Status().Phase)
	require.NotEqual(t, oldID, c.Status().Authorities[0].ID)

	reloaded, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	require.Equal(t, c.BundlePEM(), reloaded.BundlePEM(), "rotation state persists")
}

func TestBundleChangedFiresOnRotation(t *testing.T) {
	c := catest.New(t, "example.org")
	ch := c.BundleChanged()
	select {
	case <-ch:
		t.Fatal("fired before any change")
	default:
	}
	_, err := c.Rotate()
	require.NoError(t, err)
	select {
	case <-ch:
	default:
		t.Fatal("did not fire on rotation")
	}
}

func TestRotationWaitsForWatchers(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = time.Hour })
	open, lag := false, 3
	c.SetRotationGate(func() (bool, int) { return open, lag })
	_, err := c.Rotate()
	require.NoError(t, err)
	c.Clock.Step(2 * time.Hour)
	require.NoError(t, c.Advance())
	st := c.Status()
	require.Equal(t, "prepared", st.Phase, "no switch while watchers lag")
	require.Equal(t, 3, st.Lagging)
	require.True(t, st.WaitingGate)

	open, lag = true, 0
	require.NoError(t, c.Advance())
	st = c.Status()
	require.Equal(t, "retiring", st.Phase, "switched once every watcher holds the new root")
	require.False(t, st.WaitingGate)
}

// TestRunWakesForANewRotation: a rotation started while Run sleeps is
// switched at its overlap, not at Run's next routine check.
func TestRunWakesForANewRotation(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = 5 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, c.Clock.HasWaiters, 5*time.Second, time.Millisecond)
	_, err := c.Rotate()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c.Clock.Step(time.Second)
		return c.Status().Phase == "retiring"
	}, 5*time.Second, 10*time.Millisecond, "switch within the overlap, not after Run's one-minute check")
	require.Less(t, c.Clock.Now().Sub(catest.Epoch), 30*time.Second)
}

// TestForceActivateHeldRotation: `ca rotate --force` switches a rotation
// the gate holds, once its overlap has passed, and counts the override.
func TestForceActivateHeldRotation(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = time.Hour })
	c.SetRotationGate(func() (bool, int) { return false, 4 })
	_, err := c.ForceActivate()
	require.ErrorIs(t, err, ca.ErrNoRotation)

	prep, err := c.Rotate()
	require.NoError(t, err)
	c.Clock.Step(30 * time.Minute)
	_, err = c.ForceActivate()
	require.ErrorIs(t, err, ca.ErrRotationNotDue, "the override is for the gate, not the overlap")
	require.Equal(t, "prepared", c.Status().Phase)

	c.Clock.Step(time.Hour)
	require.NoError(t, c.Advance())
	require.True(t, c.Status().WaitingGate, "held by the lagging watchers")

	got, err := c.ForceActivate()
	require.NoError(t, err)
	require.Equal(t, ca.ForcedActivation{Authority: got.Authority, Forced: true, Lagging: 4}, got)
	require.Equal(t, prep.ID, got.Authority.ID)
	require.Equal(t, ca.PhaseActive, got.Authority.Phase)
	st := c.Status()
	require.Equal(t, "retiring", st.Phase)
	require.False(t, st.WaitingGate)
	require.Equal(t, 1, st.ForcedActivations)
	leaf := c.SVID(t, "spiffe://example.org/a", time.Hour)
	require.NoError(t, leaf.Certificates[1].CheckSignatureFrom(c.Roots()[1]), "new leaves chain to the new root")

	reloaded, err := ca.New(ca.Config{Dir: c.Dir, TrustDomain: td, Clock: c.Clock})
	require.NoError(t, err)
	act, _ := ca.RotationState{Authorities: reloaded.Status().State}.Active()
	require.Equal(t, prep.ID, act.ID, "the forced switch is persisted")
}

// TestForceActivateOpenGate: with nothing lagging, --force is an ordinary
// switch: not counted as an override.
func TestForceActivateOpenGate(t *testing.T) {
	c := catest.New(t, "example.org", func(cfg *ca.Config) { cfg.RotationOverlap = time.Hour })
	c.SetRotationGate(func() (bool, int) { return true, 0 })
	_, err := c.Rotate()
	require.NoError(t, err)
	c.Clock.Step(time.Hour)
	got, err := c.ForceActivate()
	require.NoError(t, err)
	require.False(t, got.Forced)
	require.Zero(t, c.Status().ForcedActivations)
	require.Equal(t, "retiring", c.Status().Phase)
}
