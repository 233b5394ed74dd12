package ca

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultIntermediateTTL is the signing intermediate's lifetime (`--ca-ttl`).
// SPIRE's ca_ttl is 24h for 1h SVIDs; certmesh's longest SVID is 24h by
// default and an intermediate must outlive two of them (see
// ErrIntermediateTTL), so a week: the online key is exposed for at most a
// week, and a renewal that fails at half life leaves 3.5 days to notice
// before any SVID is shortened.
const DefaultIntermediateTTL = 7 * 24 * time.Hour

// ErrIntermediateTTL means the intermediate's lifetime leaves too little
// room for the SVIDs it signs.
var ErrIntermediateTTL = errors.New("ca: config: the CA TTL must be at least twice the max SVID TTL")

// IntermediatePolicy is what NextIntermediateDue needs to know.
type IntermediatePolicy struct {
	// TTL is a new intermediate's lifetime.
	TTL time.Duration
	// MaxTTL is the longest leaf: a leaf signed at t ends by t+MaxTTL.
	MaxTTL time.Duration
}

// IntermediateLife describes the signing intermediate of one authority.
type IntermediateLife struct {
	NotBefore, NotAfter time.Time
	RootNotAfter        time.Time
	// Renewable: certmesh holds the root key (not a bring-your-own root).
	Renewable bool
}

// Reasons an intermediate is not renewed automatically.
const (
	NotRenewableNoRootKey   = "no root key (bring-your-own or plug-in CA): import a new intermediate, or replace the plug-in CA Secret"
	NotRenewableRootExpires = "the root expires first: a new intermediate would end no later; rotate the root"
)

// IntermediateStep is the decision for one authority's intermediate.
type IntermediateStep struct {
	// At is when a successor should take over; zero when none can.
	At time.Time
	// Due: At has come.
	Due bool
	// NotRenewable says why no successor can be made, if none can.
	NotRenewable string
}

// NextIntermediateDue decides when an authority's signing intermediate is
// replaced by a new one under the same root. A pure function of now.
//
// The successor takes over at half the intermediate's life (its life
// capped at the policy TTL, so an older, longer intermediate is brought
// into policy): with TTL ≥ 2×MaxTTL a leaf signed just before the switch
// still gets its full TTL, and a failing renewal leaves half a life to
// notice. It is never later than NotAfter-MaxTTL, which keeps that promise
// for an intermediate made under another policy. An intermediate that ends
// with its root has no useful successor: only a root rotation helps then.
func NextIntermediateDue(now time.Time, cur IntermediateLife, p IntermediatePolicy) IntermediateStep {
	if !cur.Renewable {
		return IntermediateStep{NotRenewable: NotRenewableNoRootKey}
	}
	issued := cur.NotBefore.Add(LeafBackdate) // certmesh backdates its intermediates too
	life := min(cur.NotAfter.Sub(issued), p.TTL)
	at := issued.Add(life / 2)
	if latest := cur.NotAfter.Add(-p.MaxTTL); latest.Before(at) {
		at = latest
	}
	if !cur.RootNotAfter.After(cur.NotAfter) {
		return IntermediateStep{NotRenewable: NotRenewableRootExpires}
	}
	return IntermediateStep{At: at, Due: !now.Before(at)}
}

// intermediateStep is NextIntermediateDue for authority s. Called with c.mu held.
func (c *CA) intermediateStep(now time.Time, s AuthorityState) IntermediateStep {
	a := c.authorities[s.ID]
	if s.Phase == PhaseRetiring || a == nil {
		return IntermediateStep{}
	}
	return NextIntermediateDue(now, IntermediateLife{
		NotBefore: a.Intermediate.NotBefore, NotAfter: a.Intermediate.NotAfter,
		RootNotAfter: a.Root.NotAfter, Renewable: a.RootKey != nil || c.cfg.Upstream != nil,
	}, c.interPolicy())
}

func (c *CA) interPolicy() IntermediatePolicy {
	return IntermediatePolicy{TTL: c.cfg.IntermediateTTL, MaxTTL: c.cfg.MaxTTL}
}

// nextIntermediateAt is the earliest pending intermediate renewal, or zero.
// Called with c.mu held.
func (c *CA) nextIntermediateAt(now time.Time) time.Time {
	var next time.Time
	for _, s := range c.state.Authorities {
		if at := c.intermediateStep(now, s).At; !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// renewDue makes a successor intermediate for every authority whose step is
// due, writes its files (new names, so nothing existing is touched) and
// switches it in *next. The returned authorities take effect when next is
// committed; a crash before that leaves orphan files and the old state.
// Called with c.mu held.
func (c *CA) renewDue(now time.Time, next *RotationState) (map[string]*Authority, error) {
	renewed := map[string]*Authority{}
	for _, s := range next.Authorities {
		if !c.intermediateStep(now, s).Due {
			continue
		}
		old := c.authorities[s.ID]
		a, err := c.successor(old, now)
		if err != nil {
			return renewed, fmt.Errorf("ca: renew intermediate of %s: %w", s.ID, err)
		}
		if err := a.save(c.authoritiesDir()); err != nil {
			return renewed, fmt.Errorf("ca: renew intermediate of %s: %w", s.ID, err)
		}
		retireAt := now.Add(c.policy.MaxLeafLifetime)
		if old.Intermediate.NotAfter.Before(retireAt) {
			retireAt = old.Intermediate.NotAfter
		}
		st, err := next.SwitchIntermediate(s.ID, a.interName, retireAt)
		if err != nil {
			return renewed, err
		}
		*next = st
		renewed[s.ID] = a
		c.cfg.Logger.Info("CA intermediate renewed under the same root", "authority", s.ID, "intermediate", a.interName,
			"not_after", a.Intermediate.NotAfter, "previous_retires_at", retireAt)
	}
	return renewed, nil
}

// successor is old with a new intermediate: signed by old's root key, or
// by the upstream authority when the CA has one.
func (c *CA) successor(old *Authority, now time.Time) (*Authority, error) {
	if c.cfg.Upstream != nil {
		return c.fetchedSuccessor(old)
	}
	return old.withNewIntermediate(IntermediateParams{TrustDomain: c.cfg.TrustDomain, TTL: c.cfg.IntermediateTTL, Now: now, Rand: c.cfg.Rand, Keys: c.cfg.IntermediateKeys})
}

// pruneIntermediates removes intermediate files no authority of state names:
// the retired ones, and orphans of a renewal that crashed before its state
// was written. Errors are logged; the files are harmless.
func (c *CA) pruneIntermediates(state RotationState) {
	for _, s := range state.Authorities {
		keep := map[string]bool{}
		for _, name := range append([]string{s.Intermediate}, oldNames(s)...) {
			for _, ext := range []string{".crt", ".key", ".key" + keyURISuffix} {
				keep[intermediateFile(name, ext)] = true
			}
		}
		dir := filepath.Join(c.authoritiesDir(), s.ID)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if isIntermediateFile(e.Name()) && !keep[e.Name()] {
				c.destroyKeyOnToken(filepath.Join(dir, e.Name()))
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					c.cfg.Logger.Warn("remove retired intermediate", "file", filepath.Join(dir, e.Name()), "error", err)
				}
			}
		}
	}
}

// intermediateFile is the file of the intermediate called name: the
// authority's first is intermediate.crt/.key, later ones
// intermediate-<name>.crt/.key.
func intermediateFile(name, ext string) string {
	if name == "" {
		return "intermediate" + ext
	}
	return "intermediate-" + name + ext
}

// isIntermediateFile reports whether base is an intermediate's certificate or key.
func isIntermediateFile(base string) bool {
	base = strings.TrimSuffix(base, keyURISuffix)
	stem, ok := strings.CutSuffix(base, ".crt")
	if !ok {
		stem, ok = strings.CutSuffix(base, ".key")
	}
	if !ok {
		return false
	}
	if stem == "intermediate" {
		return true
	}
	name, ok := strings.CutPrefix(stem, "intermediate-")
	return ok && validIntermediateName(name)
}

// validIntermediateName accepts what intermediateName makes: lower-case hex.
func validIntermediateName(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for _, r := range name {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
