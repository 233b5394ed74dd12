package edge

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"
)

// Log attribute keys.
const (
	logName   = "name"
	logReason = "reason"
	logErr    = "err"
	logRetry  = "retry_at"
)

// certState is the Manager's view of one certificate. mu guards everything below it.
type certState struct {
	spec    CertificateSpec
	solver  solver
	lockKey string
	wake    chan struct{} // Resync: step now (buffered, 1)
	stop    context.CancelFunc

	mu          sync.Mutex
	served      *Served
	ari         *RenewalInfo
	ariNext     time.Time
	noARI       bool
	nextRenewal time.Time
	reason      Reason
	lastErr     error
	failures    int
	retryAt     time.Time
	orders      int
	issuedAt    time.Time
}

func (st *certState) status() CertStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	cs := CertStatus{
		Name: st.spec.Name, DNSNames: st.spec.DNSNames, Issuer: st.spec.Issuer,
		NextRenewal: st.nextRenewal, Reason: st.reason, LastError: st.lastErr,
		Failures: st.failures, RetryAt: st.retryAt, Orders: st.orders,
	}
	if st.served != nil {
		cs.NotAfter = st.served.NotAfter
	}
	if st.lastErr != nil {
		cs.Error = st.lastErr.Error()
	}
	return cs
}

func (st *certState) leaf() *x509.Certificate {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.served == nil {
		return nil
	}
	return st.served.leaf
}

func (m *Manager) want(st *certState) Want {
	return Want{DNSNames: st.spec.DNSNames, KeyType: m.issuerConfig(st.spec.Issuer).KeyType}
}

// step does what is due for st now and returns when to look again.
func (m *Manager) step(ctx context.Context, st *certState) time.Time {
	m.reload(ctx, st)
	now := m.cfg.Clock.Now()
	st.mu.Lock()
	retryAt := st.retryAt
	st.mu.Unlock()
	if now.Before(retryAt) {
		return retryAt
	}
	m.refreshARI(ctx, st, now)
	st.mu.Lock()
	renew, due, reason := NeedsRenewal(now, leafOf(st.served), st.ari, m.want(st))
	st.nextRenewal, st.reason = due, reason
	ariNext, issuedAt := st.ariNext, st.issuedAt
	st.mu.Unlock()
	if !renew {
		if !ariNext.IsZero() && ariNext.Before(due) {
			return ariNext
		}
		return due
	}
	if !issuedAt.IsZero() && now.Sub(issuedAt) < m.cfg.Backoff.Min {
		// A certificate we just got still fails the policy: ordering again at once
		// would loop against the CA.
		return m.fail(st, now, fmt.Errorf("%w: new certificate still needs renewal: %s", ErrInvalidConfig, reason))
	}
	if err := m.renew(ctx, st, reason); err != nil {
		if ctx.Err() != nil {
			return now
		}
		return m.fail(st, now, err)
	}
	return m.cfg.Clock.Now()
}

func leafOf(s *Served) *x509.Certificate {
	if s == nil {
		return nil
	}
	return s.leaf
}

// fail records err, schedules the retry, tells the Observer, and keeps serving the
// current certificate.
func (m *Manager) fail(st *certState, now time.Time, err error) time.Time {
	st.mu.Lock()
	st.failures++
	st.lastErr = err
	m.cfg.OrderMetrics.observeFailure(err)
	st.retryAt = now.Add(m.cfg.Backoff.Delay(now, st.failures, err))
	retryAt := st.retryAt
	st.mu.Unlock()
	m.cfg.Logger.Warn("edge: order failed", logName, st.spec.Name, logErr, err, logRetry, retryAt)
	if m.cfg.Observer != nil {
		m.cfg.Observer.CertificateFailed(st.spec.Name, err, retryAt)
	}
	return retryAt
}

// reload adopts a stored certificate that differs from the served one: written by a
// previous run, or by another process sharing the store. When the stored copy is gone
// (a deleted Secret) but a valid one is served, it is written back: restoring costs
// nothing, while a new order could hit the CA's duplicate-certificate limit.
func (m *Manager) reload(ctx context.Context, st *certState) {
	sv, err := m.store.LoadCertificate(ctx, st.spec.Name)
	if errors.Is(err, fs.ErrNotExist) {
		m.restore(ctx, st)
		return
	}
	if err != nil {
		if !errors.Is(err, ErrNoCertificate) {
			m.cfg.Logger.Warn("edge: load", logName, st.spec.Name, logErr, err)
		}
		return
	}
	st.mu.Lock()
	same := st.served != nil && st.served.leaf.Equal(sv.leaf)
	if !same {
		st.served, st.ari, st.ariNext = &sv, nil, time.Time{}
	}
	st.mu.Unlock()
	if !same {
		m.notify()
	}
}

// restore writes the served certificate of st back to the store while it is valid.
func (m *Manager) restore(ctx context.Context, st *certState) {
	st.mu.Lock()
	served := st.served
	st.mu.Unlock()
	if served == nil || !m.cfg.Clock.Now().Before(served.NotAfter) {
		return
	}
	if err := m.store.SaveCertificate(ctx, *served); err != nil {
		m.cfg.Logger.Warn("edge: restore", logName, st.spec.Name, logErr, err)
		return
	}
	m.cfg.Logger.Info("edge: restored deleted certificate", logName, st.spec.Name)
	if m.cfg.Observer != nil {
		m.cfg.Observer.CertificateStored(st.spec.Name, *served, true)
	}
}

// refreshARI asks the CA for its renewal window when the last answer is stale.
func (m *Manager) refreshARI(ctx context.Context, st *certState, now time.Time) {
	st.mu.Lock()
	leaf, due, noARI := leafOf(st.served), !now.Before(st.ariNext), st.noARI
	st.mu.Unlock()
	if leaf == nil || !due || noARI {
		return
	}
	iss := m.issuer(st.spec.Issuer)
	if iss == nil {
		return
	}
	ans, err := iss.RenewalInfo(ctx, leaf)
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case errors.Is(err, errNoARI):
		st.noARI = true
	case err != nil:
		m.cfg.Logger.Info("edge: renewal info", logName, st.spec.Name, logErr, err)
	default:
		st.ari = m.pick(st.ari, ans)
	}
	next := m.cfg.ARIPoll
	if ans.retryAfter > 0 && ans.retryAfter < next {
		next = ans.retryAfter
	}
	st.ariNext = now.Add(next)
}

// pick keeps the instant chosen in a window while the CA's window stays the same and
// draws a new uniform one (RFC 9773 §4.2) when it moves.
func (m *Manager) pick(old *RenewalInfo, ans ariAnswer) *RenewalInfo {
	if old != nil && old.WindowStart.Equal(ans.start) && old.WindowEnd.Equal(ans.end) {
		return old
	}
	ri := &RenewalInfo{WindowStart: ans.start, WindowEnd: ans.end, Pick: ans.start}
	if span := ans.end.Sub(ans.start); span > 0 {
		var b [8]byte
		if _, err := m.cfg.Rand.Read(b[:]); err == nil {
			ri.Pick = ans.start.Add(time.Duration(binary.BigEndian.Uint64(b[:]) % uint64(span)))
		}
	}
	return ri
}

// renew orders a new certificate for st under the name-set lock.
func (m *Manager) renew(ctx context.Context, st *certState, reason Reason) error {
	select {
	case m.orders <- struct{}{}:
		defer func() { <-m.orders }()
	case <-ctx.Done():
		return ctx.Err()
	}
	unlock, err := m.locks.tryLock(st.lockKey)
	if err != nil {
		return err
	}
	defer unlock()
	m.reload(ctx, st) // someone else may have renewed while we waited
	now := m.cfg.Clock.Now()
	old := st.leaf()
	st.mu.Lock()
	ari := st.ari
	st.mu.Unlock()
	if renew, _, _ := NeedsRenewal(now, old, ari, m.want(st)); !renew {
		return nil
	}
	return m.order(ctx, st, old, reason)
}

func (m *Manager) order(ctx context.Context, st *certState, old *x509.Certificate, reason Reason) error {
	m.cfg.Logger.Info("edge: ordering", logName, st.spec.Name, logReason, reason)
	iss := m.issuer(st.spec.Issuer)
	if iss == nil {
		return fmt.Errorf("%w: unknown issuer %q", ErrInvalidConfig, st.spec.Issuer)
	}
	key, err := newKey(m.issuerConfig(st.spec.Issuer).KeyType, m.cfg.Rand)
	if err != nil {
		return fmt.Errorf("edge: key for %s: %w", st.spec.Name, err)
	}
	req := orderRequest{spec: st.spec, solver: st.solver, key: key}
	if reason != ReasonMissing && reason != ReasonNamesChanged {
		req.replaces = old
	}
	st.mu.Lock()
	st.orders++
	st.mu.Unlock()
	start := m.cfg.Clock.Now()
	sv, err := iss.Obtain(ctx, req)
	m.cfg.OrderMetrics.observeOrder(m.cfg.Clock.Now().Sub(start), err)
	if err != nil {
		return err
	}
	if err := m.store.SaveCertificate(ctx, sv); err != nil {
		return err
	}
	st.mu.Lock()
	st.served, st.ari, st.ariNext, st.noARI = &sv, nil, time.Time{}, false
	st.failures, st.lastErr, st.retryAt = 0, nil, time.Time{}
	st.issuedAt = m.cfg.Clock.Now()
	st.mu.Unlock()
	m.cfg.Logger.Info("edge: issued", logName, st.spec.Name, slog.Time("not_after", sv.NotAfter))
	if m.cfg.Observer != nil {
		m.cfg.Observer.CertificateStored(st.spec.Name, sv, false)
	}
	m.notify()
	return nil
}
