package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"
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
	if c.cfg.Upstream != nil {
		return AuthorityState{}, ErrUpstreamManagesRoots
	}
	if _, ok := c.state.Prepared(); ok {
		return AuthorityState{}, ErrRotationInProgress
	}
	a, err := NewAuthority(AuthorityParams{TrustDomain: c.cfg.TrustDomain, KeyType: c.rotationKeyType(),
		IntermediateTTL: c.cfg.IntermediateTTL, Now: now, Rand: c.cfg.Rand,
		RootKeys: c.cfg.RootKeys, IntermediateKeys: c.cfg.IntermediateKeys})
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

// rotationKeyType is the key type of a new root: the configured one, else
// the active root's, so that a rotation never changes it silently. Called
// with c.mu held.
func (c *CA) rotationKeyType() KeyType {
	if c.cfg.KeyType != "" {
		return c.cfg.KeyType
	}
	if a := c.active.Load(); a != nil {
		if kt, err := KeyTypeOf(a.Root.PublicKey); err == nil {
			return kt
		}
	}
	return KeyECP256
}

// Advance applies the rotation steps due now and persists them: a root
// switch or retirement (RotationState.AdvanceWhen), and a new intermediate
// under the same root where NextIntermediateDue says so. Run calls it on a
// timer; tests call it directly after moving a fake clock.
func (c *CA) Advance() error {
	fetched := c.fetchUpstream() // before the lock: see fetchUpstream
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	next, changed := c.state.AdvanceWhen(now, c.policy, c.gateOpen(now))
	c.fetched = fetched
	renewed, renewErr := c.renewDue(now, &next)
	c.fetched = nil
	if renewErr != nil {
		c.renewFailures++
	}
	if changed || len(renewed) > 0 {
		if err := c.commit(next, renewed); err != nil {
			return fmt.Errorf("ca: advance rotation: %w", err)
		}
	}
	if renewErr != nil {
		return fmt.Errorf("ca: advance rotation: %w", renewErr)
	}
	return nil
}

// commit persists next and makes it the live state with the renewed
// authorities (new intermediates, their files already written), dropping
// the authorities and intermediate files it no longer names. Called with
// c.mu held.
func (c *CA) commit(next RotationState, renewed map[string]*Authority) error {
	if err := c.saveState(next); err != nil {
		return err
	}
	for id, a := range renewed {
		c.authorities[id] = a
	}
	c.pruneIntermediates(next)
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

// retryAfterFailure spaces attempts at a failing step (a full disk), which
// would otherwise be retried at once while it stays due.
const retryAfterFailure = 10 * time.Second

func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// Run advances rotations when they are due until ctx ends. It checks at
// least once a minute, so a rotation started by another process (the CLI on
// a stopped server's directory) is also picked up after a restart.
func (c *CA) Run(ctx context.Context) error {
	for {
		wait := time.Minute
		c.mu.Lock()
		now := c.cfg.Clock.Now()
		for _, next := range []time.Time{c.state.NextEvent(), c.nextIntermediateAt(now)} {
			if d := next.Sub(now); !next.IsZero() && d < wait {
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
			if !sleep(ctx, c.cfg.Clock, retryAfterFailure) {
				return nil
			}
		}
	}
}
