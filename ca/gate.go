package ca

import (
	"errors"
	"fmt"
	"time"
)

// RotationGate says whether signing may switch to a prepared root now, and
// how many watchers still lack the bundle that contains it. The server
// plugs in the agents' acknowledgements; without a gate the overlap alone
// decides.
type RotationGate func() (ok bool, lagging int)

// gatePoll is how often a rotation held by its gate is checked again.
const gatePoll = time.Second

// SetRotationGate installs the gate (the server does this once the
// acknowledgement service exists, after New).
func (c *CA) SetRotationGate(g RotationGate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate = g
}

// gateOpen consults the gate for a due switch and remembers the lag for
// Status. Called with c.mu held.
func (c *CA) gateOpen(now time.Time) bool {
	prep, ok := c.state.Prepared()
	if !ok || now.Before(prep.ActivateAt) || c.gate == nil {
		c.lagging = 0
		return true
	}
	open, lagging := c.gate()
	c.lagging = lagging
	if !open && !c.held {
		c.cfg.Logger.Info("CA rotation waiting for watchers to hold the new root", "authority", prep.ID, "lagging", lagging)
	}
	c.held = !open
	return open
}

// Errors of a forced activation.
var (
	ErrNoRotation     = errors.New("ca: no rotation in progress (no prepared root)")
	ErrRotationNotDue = errors.New("ca: the prepared root's overlap has not passed")
)

// ForcedActivation is what ForceActivate did: the authority that signs now,
// and whether (and past how many lagging watchers) the gate was overridden.
type ForcedActivation struct {
	Authority AuthorityState `json:"authority"`
	Forced    bool           `json:"forced"`
	Lagging   int            `json:"watchersLagging"`
}

// ForceActivate switches signing to the prepared root now although the
// gate holds it: the operator's override (`certmesh ca rotate --force`)
// for watchers that will never catch up, or a report that holds the
// rotation on purpose. It overrides the gate only, not the overlap: before
// ActivateAt it refuses with ErrRotationNotDue. An override is logged as a
// warning naming the lagging watchers and counted (Status.ForcedActivations).
func (c *CA) ForceActivate() (ForcedActivation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	prep, ok := c.state.Prepared()
	if !ok {
		return ForcedActivation{}, ErrNoRotation
	}
	if now.Before(prep.ActivateAt) {
		return ForcedActivation{}, fmt.Errorf("%w: authority %s may sign from %s", ErrRotationNotDue, prep.ID, prep.ActivateAt.Format(time.RFC3339))
	}
	open, lagging := true, 0
	if c.gate != nil {
		open, lagging = c.gate()
	}
	next, _ := c.state.AdvanceWhen(now, c.policy, true)
	if err := c.commit(next, nil); err != nil {
		return ForcedActivation{}, fmt.Errorf("ca: force activation: %w", err)
	}
	c.held, c.lagging = false, 0
	if !open {
		c.forced++
		c.cfg.Logger.Warn("CA rotation forced by the operator: signing switched while watchers lag", "authority", prep.ID, "lagging", lagging)
	}
	act, _ := next.Active()
	return ForcedActivation{Authority: act, Forced: !open, Lagging: lagging}, nil
}
