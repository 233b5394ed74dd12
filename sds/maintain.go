package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrNoCredential means the agent has neither a valid SVID nor a usable
// bootstrap credential (a join token is spent): it needs a new token.
var ErrNoCredential = errors.New("sds: no valid SVID and no unused credential; give the agent a new join token")

// Log attribute keys.
const (
	attrID    = "spiffe_id"
	attrError = "error"
)

// slot is one SVID the agent keeps fresh: its own, or a workload's.
type slot struct {
	id      spiffeid.ID // zero for the agent's own until known
	own     bool
	current func() *x509svid.SVID
	store   func(*x509svid.SVID)
}

func (a *Agent) ownSlot() slot {
	return slot{
		own: true,
		current: func() *x509svid.SVID {
			a.mu.RLock()
			defer a.mu.RUnlock()
			return a.own
		},
		store: func(s *x509svid.SVID) { a.mu.Lock(); a.own = s; a.mu.Unlock() },
	}
}

func (a *Agent) workloadSlot(id spiffeid.ID) slot {
	return slot{
		id: id,
		current: func() *x509svid.SVID {
			a.mu.RLock()
			defer a.mu.RUnlock()
			return a.svids[id]
		},
		store: func(s *x509svid.SVID) {
			a.mu.Lock()
			if elsewhere, wanted := a.wanted[id]; s == nil || !wanted || elsewhere {
				delete(a.svids, id) // a workload dropped by SetWorkloads, or moved to another node, stays dropped
			} else {
				a.svids[id] = s
			}
			a.mu.Unlock()
		},
	}
}

// maintain obtains the slot's SVID, then renews it at about half its life;
// on failure it retries with backoff, keeps serving the current SVID until
// it expires, and drops it then.
func (a *Agent) maintain(ctx context.Context, s slot) {
	if !s.own && a.cfg.WorkloadOn != nil {
		node, err := a.NodeID(ctx)
		if err != nil {
			return
		}
		if !a.cfg.WorkloadOn(s.id, node) {
			a.cfg.Logger.Info("workload registered for other nodes; not kept here", attrID, s.id.String(), "node", node.String())
			a.mu.Lock()
			if _, wanted := a.wanted[s.id]; wanted {
				a.wanted[s.id] = true
			}
			a.mu.Unlock()
			a.checkReady()
			return
		}
	}
	attempt := 0
	for {
		if !s.own && !a.waitForOwn(ctx) {
			return
		}
		start := a.cfg.Clock.Now()
		svid, err := a.renew(ctx, s)
		now := a.cfg.Clock.Now()
		if ctx.Err() == nil {
			a.metrics.observeRequest(now.Sub(start), err)
		}
		var wake time.Time
		if err == nil {
			attempt = 0
			s.store(svid)
			a.metrics.observeSVID(svid)
			a.notify()
			a.checkReady()
			wake = RotateAt(now, svid.Certificates[0].NotAfter, 2*a.cfg.Jitter()-1)
			if a.cfg.Logger.Enabled(ctx, slog.LevelDebug) { // not even the attributes at info
				a.cfg.Logger.Debug("SVID renewed", attrID, svid.ID.String(), "not_after", svid.Certificates[0].NotAfter, "next", wake)
			}
		} else {
			if ctx.Err() != nil {
				return
			}
			a.metrics.caFailures.Inc()
			if status.Code(err) == codes.PermissionDenied {
				a.revoked(s, err)
			} else {
				a.cfg.Logger.Warn("SVID renewal failed; retrying with backoff", attrID, s.id.String(), attrError, err.Error())
			}
			wait := Backoff(attempt, a.cfg.Jitter())
			var busy *BusyError
			if errors.As(err, &busy) {
				// The CA is shedding a storm: come back when it says, spread
				// by jitter so that the shed callers do not return together.
				wait = time.Duration(float64(busy.RetryAfter) * (1 + a.cfg.Jitter()))
			}
			wake = NextAttempt(now, a.expireIfDue(s, now), wait)
			attempt++
		}
		if !a.sleepUntil(ctx, wake) {
			return
		}
	}
}

// revoked stops serving an identity the CA no longer grants (a removed
// registration, an evicted node, a deleted pod): the CA decides from what
// holds now, so the SVID in hand must not outlive the grant either. The
// agent keeps asking with backoff, so a grant that comes back is served.
func (a *Agent) revoked(s slot, err error) {
	a.cfg.Logger.Error("the CA no longer grants this identity; no longer served", attrID, s.id.String(), attrError, err.Error())
	if s.current() == nil {
		return
	}
	if s.own {
		// The workloads' SVIDs were granted to this node; a node the CA
		// refuses (evicted, banned) is refused them too. Without this, a
		// workload slot that had not renewed yet waited for a node SVID
		// that never came and kept serving until expiry
		// (TestAgentStopsServingWhatTheCARefuses failed 6 times in 20).
		a.mu.Lock()
		a.own = nil
		clear(a.svids)
		a.mu.Unlock()
	} else {
		s.store(nil)
	}
	a.notify()
}

// expireIfDue drops the slot's SVID once it has expired and returns the
// expiry of what is still held (zero if nothing).
func (a *Agent) expireIfDue(s slot, now time.Time) time.Time {
	cur := s.current()
	if cur == nil {
		return time.Time{}
	}
	exp := cur.Certificates[0].NotAfter
	if now.Before(exp) {
		return exp
	}
	if !s.own {
		s.store(nil)
	}
	a.metrics.expired.Inc()
	a.cfg.Logger.Error("SVID expired and could not be renewed; no longer served", attrID, cur.ID.String())
	a.notify()
	return time.Time{}
}

// renew has one of the MaxInFlight workers (runWorkers) make a new key and
// get it signed with the best credential at hand.
//
// The work is not done on the slot's own goroutine: with thousands of
// workloads, each of their goroutines grew its stack for the crypto and
// gRPC calls (copystack) and the garbage collector scanned those stacks
// while they slept, a fifth of the agent's CPU at start. The few workers
// keep their grown stacks; the slots' goroutines only sleep and wait.
func (a *Agent) renew(ctx context.Context, s slot) (*x509svid.SVID, error) {
	type result struct {
		svid *x509svid.SVID
		err  error
	}
	done := make(chan result, 1)
	job := func() {
		svid, err := a.renewNow(ctx, s)
		done <- result{svid, err}
	}
	select {
	case a.work <- job:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := <-done // a worker that took the job always finishes it
	return r.svid, r.err
}

// runWorkers runs the MaxInFlight workers that renew until ctx ends.
func (a *Agent) runWorkers(ctx context.Context, g *errgroup.Group) {
	for range a.cfg.MaxInFlight {
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case job := <-a.work:
					job()
				}
			}
		})
	}
}

// renewNow makes a new key and gets it signed with the best credential at hand.
func (a *Agent) renewNow(ctx context.Context, s slot) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), a.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("sds: key: %w", err)
	}
	req := signRequest{key: key, ttl: a.cfg.SVIDTTL}
	own, ownValid := a.validOwn()
	switch {
	case !s.own:
		req.client, req.impersonate = own, s.id
	case ownValid && !presentsCredentialEachTime(a.cfg.Credential):
		req.client = own
	default:
		tok, ok := a.cfg.Credential.Token()
		if !ok {
			return nil, ErrNoCredential
		}
		req.bearer = tok
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return a.client.sign(rctx, req)
}

func (a *Agent) validOwn() (*x509svid.SVID, bool) {
	a.mu.RLock()
	own := a.own
	a.mu.RUnlock()
	return own, own != nil && a.cfg.Clock.Now().Before(own.Certificates[0].NotAfter)
}

// waitForOwn blocks until the agent holds a valid SVID of its own, which
// workload requests are authenticated with.
func (a *Agent) waitForOwn(ctx context.Context) bool {
	for {
		changed := a.Changed()
		if _, ok := a.validOwn(); ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

func (a *Agent) sleepUntil(ctx context.Context, t time.Time) bool {
	timer := a.cfg.Clock.NewTimer(t.Sub(a.cfg.Clock.Now()))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C():
		return true
	}
}
