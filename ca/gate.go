package ca

import "time"

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
