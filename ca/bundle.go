package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleSnapshot is an immutable view of the trust bundle, swapped atomically
// on every change so readers never lock.
type bundleSnapshot struct {
	bundle *x509bundle.Bundle
	roots  []*x509.Certificate
	pem    []byte
}

func newBundleSnapshot(td spiffeid.TrustDomain, state RotationState, auths map[string]*Authority) *bundleSnapshot {
	var roots []*x509.Certificate
	for _, s := range state.Authorities {
		roots = append(roots, auths[s.ID].Root)
	}
	return &bundleSnapshot{
		bundle: x509bundle.FromX509Authorities(td, roots),
		roots:  roots,
		pem:    EncodeCertsPEM(roots...),
	}
}

// Bundle is the X.509 trust bundle: every root in any phase, so that leaves
// from the old and the new authority both verify during a rotation.
func (c *CA) Bundle() *x509bundle.Bundle { return c.bundle.Load().bundle }

// BundlePEM is the trust bundle as concatenated PEM certificates.
func (c *CA) BundlePEM() []byte { return c.bundle.Load().pem }

// Roots returns the roots of the trust bundle.
func (c *CA) Roots() []*x509.Certificate { return c.bundle.Load().roots }

// BundleChanged returns a channel closed at the next change of the bundle or
// the signing authority. Call it again after it fires.
func (c *CA) BundleChanged() <-chan struct{} {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	return c.watchCh
}

// Rotate starts a root rotation: a new root and intermediate are created and
// published in the bundle at once; they sign only after the overlap.
func (c *CA) Rotate() (AuthorityState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	if _, ok := c.state.Prepared(); ok {
		return AuthorityState{}, ErrRotationInProgress
	}
	a, err := NewAuthority(AuthorityParams{TrustDomain: c.cfg.TrustDomain, KeyType: c.cfg.KeyType, Now: now, Rand: c.cfg.Rand})
	if err != nil {
		return AuthorityState{}, err
	}
	next, err := c.state.Prepare(now, a.ID, c.policy)
	if err != nil {
		return AuthorityState{}, err
	}
	if err := c.migrateLegacyJWTKey(); err != nil {
		return AuthorityState{}, err
	}
	if err := a.save(c.authoritiesDir()); err != nil {
		return AuthorityState{}, err
	}
	if err := c.saveState(next); err != nil {
		return AuthorityState{}, err
	}
	c.authorities[a.ID] = a
	c.install(next)
	prep, _ := next.Prepared()
	c.cfg.Logger.Info("CA rotation prepared", "authority", a.ID, "activate_at", prep.ActivateAt)
	return prep, nil
}

// Advance applies the rotation steps due now and persists them. Run calls it
// on a timer; tests call it directly after moving a fake clock.
func (c *CA) Advance() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	next, changed := c.state.AdvanceWhen(now, c.policy, c.gateOpen(now))
	if !changed {
		return nil
	}
	if err := c.commit(next); err != nil {
		return fmt.Errorf("ca: advance rotation: %w", err)
	}
	return nil
}

// commit persists next and makes it the live state, dropping the
// authorities it no longer names. Called with c.mu held.
func (c *CA) commit(next RotationState) error {
	if err := c.saveState(next); err != nil {
		return err
	}
	for id := range c.authorities {
		if !containsAuthority(next, id) {
			delete(c.authorities, id)
			c.cfg.Logger.Info("CA root retired", "authority", id)
		}
	}
	if act, ok := next.Active(); ok && act.ID != c.active.Load().ID {
		c.cfg.Logger.Info("CA signing switched", "authority", act.ID)
	}
	c.install(next)
	return nil
}

func containsAuthority(s RotationState, id string) bool {
	for _, a := range s.Authorities {
		if a.ID == id {
			return true
		}
	}
	return false
}

// Run advances rotations when they are due until ctx ends. It checks at
// least once a minute, so a rotation started by another process (the CLI on
// a stopped server's directory) is also picked up after a restart.
func (c *CA) Run(ctx context.Context) error {
	for {
		wait := time.Minute
		c.mu.Lock()
		if next := c.state.NextEvent(); !next.IsZero() {
			if d := next.Sub(c.cfg.Clock.Now()); d < wait {
				wait = max(d, 0)
			}
		}
		if c.held {
			wait = gatePoll
		}
		c.mu.Unlock()
		changed := c.BundleChanged()
		t := c.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case <-changed: // a rotation started: its schedule is new
			t.Stop()
		}
		if err := c.Advance(); err != nil {
			c.cfg.Logger.Error("CA rotation step failed; will retry", "error", err)
		}
	}
}
