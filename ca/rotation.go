package ca

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Phase is where an authority stands in its life. Rotation moves a new
// authority through prepared → active while the old one goes active →
// retiring → gone, so that every verifier trusts a root before any leaf
// signed under it is seen, and keeps trusting the old root until the last
// leaf it signed has expired.
type Phase string

const (
	// PhasePrepared: the root is in the trust bundle, nothing is signed with it yet.
	PhasePrepared Phase = "prepared"
	// PhaseActive: the authority signs every new leaf.
	PhaseActive Phase = "active"
	// PhaseRetiring: no longer signs; its root stays in the bundle until RetireAt.
	PhaseRetiring Phase = "retiring"
)

// AuthorityState is the persisted life of one authority.
type AuthorityState struct {
	ID          string    `json:"id"`
	Phase       Phase     `json:"phase"`
	PreparedAt  time.Time `json:"preparedAt,omitzero"`
	ActivateAt  time.Time `json:"activateAt,omitzero"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
	RetireAt    time.Time `json:"retireAt,omitzero"`
	// Intermediate names the signing intermediate's files under the same
	// root: intermediate-<Intermediate>.crt/.key; empty names the
	// authority's first one, intermediate.crt/.key.
	Intermediate string `json:"intermediate,omitempty"`
	// OldIntermediates were replaced under the same root (RenewIntermediate);
	// each is kept until the last leaf it signed has expired.
	OldIntermediates []OldIntermediate `json:"oldIntermediates,omitempty"`
}

// OldIntermediate is a replaced intermediate, kept until RetireAt.
type OldIntermediate struct {
	Name     string    `json:"name"`
	RetireAt time.Time `json:"retireAt"`
}

// RotationState is the set of authorities a CA knows, persisted as state.json.
type RotationState struct {
	Authorities []AuthorityState `json:"authorities"`
}

// RotationPolicy holds the durations rotation waits on.
type RotationPolicy struct {
	// Overlap is how long a prepared root is published before it signs, so
	// that every workload has picked up the new bundle first.
	Overlap time.Duration
	// MaxLeafLifetime bounds how long a leaf signed by the old authority can
	// live (max TTL plus backdating); the old root is kept that long after
	// the switch.
	MaxLeafLifetime time.Duration
}

// Errors a rotation step can report.
var (
	ErrRotationInProgress = errors.New("ca: a rotation is already in progress")
	ErrNoActiveAuthority  = errors.New("ca: no active authority")
)

// Active returns the signing authority's state.
func (s RotationState) Active() (AuthorityState, bool) {
	for _, a := range s.Authorities {
		if a.Phase == PhaseActive {
			return a, true
		}
	}
	return AuthorityState{}, false
}

// Prepared returns the authority waiting to become active, if any.
func (s RotationState) Prepared() (AuthorityState, bool) {
	for _, a := range s.Authorities {
		if a.Phase == PhasePrepared {
			return a, true
		}
	}
	return AuthorityState{}, false
}

// CurrentPhase summarizes the rotation for status output and metrics.
func (s RotationState) CurrentPhase() string {
	if _, ok := s.Prepared(); ok {
		return "prepared"
	}
	for _, a := range s.Authorities {
		if a.Phase == PhaseRetiring {
			return "retiring"
		}
	}
	return "steady"
}

// Prepare adds a new authority in the prepared phase. It refuses while
// another rotation has not switched yet; a retiring root may still linger.
func (s RotationState) Prepare(now time.Time, id string, p RotationPolicy) (RotationState, error) {
	if _, ok := s.Prepared(); ok {
		return s, ErrRotationInProgress
	}
	if _, ok := s.Active(); !ok {
		return s, ErrNoActiveAuthority
	}
	out := s.clone()
	out.Authorities = append(out.Authorities, AuthorityState{
		ID: id, Phase: PhasePrepared, PreparedAt: now, ActivateAt: now.Add(p.Overlap),
	})
	return out, nil
}

// Advance applies every step that is due at now and reports whether anything
// changed. It is a pure function: the caller persists the result.
func (s RotationState) Advance(now time.Time, p RotationPolicy) (RotationState, bool) {
	return s.AdvanceWhen(now, p, true)
}

// AdvanceWhen is Advance with the switch to a prepared root allowed only
// when switchAllowed (every watcher holds the new root); retirement of an
// old root depends on time alone.
func (s RotationState) AdvanceWhen(now time.Time, p RotationPolicy, switchAllowed bool) (RotationState, bool) {
	out := s.clone()
	changed := false
	if prep, ok := out.Prepared(); ok && switchAllowed && !now.Before(prep.ActivateAt) {
		for i := range out.Authorities {
			a := &out.Authorities[i]
			switch {
			case a.Phase == PhaseActive:
				a.Phase, a.RetireAt = PhaseRetiring, now.Add(p.MaxLeafLifetime)
			case a.ID == prep.ID:
				a.Phase, a.ActivatedAt = PhaseActive, now
			}
		}
		changed = true
	}
	kept := out.Authorities[:0]
	for _, a := range out.Authorities {
		if a.Phase == PhaseRetiring && !now.Before(a.RetireAt) {
			changed = true
			continue
		}
		var olds []OldIntermediate
		for _, o := range a.OldIntermediates {
			if now.Before(o.RetireAt) {
				olds = append(olds, o)
			}
		}
		if len(olds) != len(a.OldIntermediates) {
			a.OldIntermediates, changed = olds, true
		}
		kept = append(kept, a)
	}
	out.Authorities = kept
	return out, changed
}

// SwitchIntermediate makes name the signing intermediate of authority id
// (same root, so the bundle does not change); the one it replaces is kept
// until retireAt, when the last leaf it signed has expired. Pure: the
// caller has written the new intermediate's files and persists the result.
func (s RotationState) SwitchIntermediate(id, name string, retireAt time.Time) (RotationState, error) {
	out := s.clone()
	for i := range out.Authorities {
		a := &out.Authorities[i]
		if a.ID != id {
			continue
		}
		if a.Phase == PhaseRetiring {
			return s, fmt.Errorf("ca: authority %s is retiring; its intermediate is not renewed", id)
		}
		a.OldIntermediates = append(slices.Clone(a.OldIntermediates), OldIntermediate{Name: a.Intermediate, RetireAt: retireAt})
		a.Intermediate = name
		return out, nil
	}
	return s, fmt.Errorf("ca: no authority %s", id)
}

// NextEvent is the earliest time Advance would change something, or zero.
func (s RotationState) NextEvent() time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, a := range s.Authorities {
		switch a.Phase {
		case PhasePrepared:
			consider(a.ActivateAt)
		case PhaseRetiring:
			consider(a.RetireAt)
		}
		for _, o := range a.OldIntermediates {
			consider(o.RetireAt)
		}
	}
	return next
}

func (s RotationState) validate() error {
	active := 0
	for _, a := range s.Authorities {
		for _, n := range append([]string{a.Intermediate}, oldNames(a)...) {
			if n != "" && !validIntermediateName(n) {
				return fmt.Errorf("ca: state: authority %s names intermediate %q", a.ID, n)
			}
		}
		switch a.Phase {
		case PhaseActive:
			active++
		case PhasePrepared, PhaseRetiring:
		default:
			return fmt.Errorf("ca: state: authority %s has unknown phase %q", a.ID, a.Phase)
		}
	}
	if active != 1 {
		return fmt.Errorf("ca: state: want exactly one active authority, found %d", active)
	}
	return nil
}

func oldNames(a AuthorityState) []string {
	var out []string
	for _, o := range a.OldIntermediates {
		out = append(out, o.Name)
	}
	return out
}

func (s RotationState) clone() RotationState {
	return RotationState{Authorities: append([]AuthorityState(nil), s.Authorities...)}
}
