package k8s

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/certmesh/certmesh/ca/service"
)

// ackPeer is another replica's summary as this replica last saw it.
type ackPeer struct {
	lease, identity string
	rv              string
	summary         service.AckSummary
	err             error // why the summary cannot be read (then it is ignored)
	// observed is when this replica saw the summary change, on its own
	// clock: freshness never compares two machines' clocks (client-go's
	// leader election judges a Lease the same way). A summary first seen
	// when this replica starts counts as fresh for StaleAfter even if its
	// writer is long dead: that can only hold a rotation a little longer.
	observed time.Time
}

// fresh says whether the peer's summary is recent enough to count.
func (p *ackPeer) fresh(now time.Time, staleAfter time.Duration) bool {
	return now.Sub(p.observed) <= staleAfter
}

func (x *AckExchange) observeObject(o any) {
	if l, ok := o.(*coordinationv1.Lease); ok {
		x.observe(l)
	}
}

func (x *AckExchange) forgetObject(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	if l, ok := o.(*coordinationv1.Lease); ok {
		x.mu.Lock()
		delete(x.peers, l.Name)
		x.mu.Unlock()
	}
}

// observe records another replica's summary Lease. Only a new
// resourceVersion counts as a renewal: the informer's relists deliver the
// same object again and must not make a dead replica look alive.
func (x *AckExchange) observe(l *coordinationv1.Lease) {
	if l.Name == x.name {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if p, ok := x.peers[l.Name]; ok && p.rv == l.ResourceVersion {
		return
	}
	p := &ackPeer{lease: l.Name, identity: strings.TrimPrefix(l.Name, AckLeasePrefix), rv: l.ResourceVersion, observed: x.cfg.Clock.Now()}
	if l.Spec.HolderIdentity != nil {
		p.identity = *l.Spec.HolderIdentity
	}
	p.summary, p.err = parseAckSummary(l)
	if p.err != nil {
		x.cfg.Logger.Warn("ignoring another replica's acknowledgement summary", "lease", l.Name, "error", p.err)
	}
	x.peers[l.Name] = p
}

// parseAckSummary reads the summary a Lease carries.
func parseAckSummary(l *coordinationv1.Lease) (service.AckSummary, error) {
	var s service.AckSummary
	if v := l.Labels[AckSummaryKey]; v != AckSummaryVersion {
		return s, fmt.Errorf("%w: format %q, this replica reads %q", ErrBadAckSummaryLease, v, AckSummaryVersion)
	}
	body, ok := l.Annotations[AckSummaryKey]
	if !ok {
		return s, fmt.Errorf("%w: no %s annotation", ErrBadAckSummaryLease, AckSummaryKey)
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return service.AckSummary{}, fmt.Errorf("%w: %w", ErrBadAckSummaryLease, err)
	}
	if err := s.Validate(); err != nil {
		return service.AckSummary{}, fmt.Errorf("%w: %w", ErrBadAckSummaryLease, err)
	}
	return s, nil
}

// Gate is the cluster-wide rotation gate: the local registry's answer plus
// that of every other replica whose summary is fresh. Until the summaries
// have been listed once it stays closed: another replica's lagging agents
// are not known yet, and opening on ignorance would defeat the gate.
//
// A stale summary (not renewed within StaleAfter) is ignored. That is safe:
// a replica stops renewing when it died or lost the apiserver; its agents
// lose their connection with it, reconnect (with backoff) to a live replica,
// receive the current bundle as the first message of their new bundle
// stream, and report there within their heartbeat — well within
// AckLiveness — so the leader counts them again. Counting a dead replica's
// last summary instead would hold rotation forever, while the old root runs
// towards its expiry. (The registry treats a silent agent the same way.)
func (x *AckExchange) Gate(roots [32]byte) (ok bool, lagging int) {
	_, lagging = x.cfg.Local.Gate(roots)
	now := x.cfg.Clock.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	synced := x.hasSynced != nil && x.hasSynced()
	if !synced && !x.warned {
		x.warned = true
		x.cfg.Logger.Warn("rotation gate closed until the other replicas' acknowledgement summaries are listed (check the Role's leases list/watch)", "namespace", x.cfg.Namespace)
	}
	lagging += x.peersLagging(now, roots)
	return synced && lagging == 0, lagging
}

// peersLagging adds up the fresh, readable peers' lag. Called with x.mu held.
func (x *AckExchange) peersLagging(now time.Time, roots [32]byte) int {
	n := 0
	for _, p := range x.peers {
		if p.err == nil && p.fresh(now, x.cfg.StaleAfter) {
			_, l := p.summary.Gate(roots)
			n += l
		}
	}
	return n
}

// AckPeerStatus is another replica's summary as shown in the admin status.
type AckPeerStatus struct {
	Identity string `json:"identity"`
	Lease    string `json:"lease"`
	Agents   int    `json:"agents"`
	// Fresh: the summary counts in the gate (renewed within StaleAfter).
	Fresh      bool      `json:"fresh"`
	ObservedAt time.Time `json:"observedAt"`
	Error      string    `json:"error,omitempty"`
}

// AckExchangeStatus is this replica's view for the admin status.
type AckExchangeStatus struct {
	Lease  string `json:"lease"`
	Synced bool   `json:"synced"`
	// Agents is how many agents report to this replica.
	Agents int `json:"agents"`
	// WatchersLagging counts, over every replica's fresh summary, the
	// watchers that do not hold the given bundle (the CA's current one).
	WatchersLagging int             `json:"watchersLagging"`
	Peers           []AckPeerStatus `json:"peers"`
}

// Status describes the exchange; roots is the bundle lag is counted against.
func (x *AckExchange) Status(roots [32]byte) AckExchangeStatus {
	local := x.cfg.Local.Summary()
	_, lagging := x.cfg.Local.Gate(roots)
	now := x.cfg.Clock.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	st := AckExchangeStatus{
		Lease: x.name, Synced: x.hasSynced != nil && x.hasSynced(), Agents: local.Agents(),
		WatchersLagging: lagging + x.peersLagging(now, roots), Peers: []AckPeerStatus{},
	}
	for _, p := range x.peers {
		ps := AckPeerStatus{Identity: p.identity, Lease: p.lease, Agents: p.summary.Agents(), Fresh: p.fresh(now, x.cfg.StaleAfter), ObservedAt: p.observed}
		if p.err != nil {
			ps.Error = p.err.Error()
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b AckPeerStatus) int { return strings.Compare(a.Lease, b.Lease) })
	return st
}
