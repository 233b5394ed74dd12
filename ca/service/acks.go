package service

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

// The acknowledgement service's message, descriptor and client call are
// the agent's contract with the CA and live in ca/wire; the registry here is
// the server side.

// AckRegistry collects agents' reports and answers the rotation gate. It
// keeps one report per agent, in a slot named by what authenticated the
// caller, never by what it claims (a report's instance is the agent's own
// word, so keying by it would let one caller fill many slots): a node
// agent's SPIFFE ID, or a workload-mode agent's ID and pod UID (see
// authenticateAgent).
type AckRegistry struct {
	svc   *Service
	clock clock.PassiveClock

	mu      sync.Mutex
	reports map[string]ackEntry // by ackSlot
}

type ackEntry struct {
	wire.AckReport
	seen time.Time
}

// NewAckRegistry serves reports from node agents authenticated by their
// SVID and workload-mode agents authenticated by their pod's token.
func (s *Service) NewAckRegistry() *AckRegistry {
	return &AckRegistry{svc: s, clock: s.cfg.Clock, reports: map[string]ackEntry{}}
}

// Register adds the acknowledgement service to g. It is generated code's
// descriptor, so g's interceptors run on Report like on every method.
func (r *AckRegistry) Register(g *grpc.Server) { wire.RegisterAcks(g, r.report) }

func (r *AckRegistry) report(ctx context.Context, rep wire.AckReport) error {
	slot, err := r.svc.authenticateAgent(ctx)
	if err != nil {
		return r.svc.refuse(ctx, err)
	}
	if err := rep.Validate(); err != nil {
		return r.svc.refuse(ctx, fmt.Errorf("%w (from %s)", err, slot))
	}
	if err := r.record(slot, rep); err != nil {
		return r.svc.refuse(ctx, err)
	}
	return nil
}

// authenticateAgent admits the two kinds of agent whose watchers can hold a
// rotation and names the one slot each fills:
//
//   - a node agent (an ID under identity.NodePathPrefix), by its SVID over
//     mTLS, fills its node's slot;
//   - a workload-mode agent, by the ServiceAccount token it was attested
//     from (the replicas of a Deployment share an ID), fills the slot of its
//     ID and the pod UID the attestor verified (Identity.Instance). One
//     pod's token fills one slot, and a deleted pod's token is refused.
//
// Anyone else could hold a rotation with a stale bundle and is refused. A
// join token is never attested here: it is one-time, and a heartbeat would
// spend it (node agents report with their SVID).
func (s *Service) authenticateAgent(ctx context.Context) (string, error) {
	token, err := bearerToken(ctx)
	switch {
	case errors.Is(err, errNoCredential):
		caller, err := s.authenticateNode(ctx)
		return caller.ID.String(), err
	case err != nil:
		return "", err
	case strings.HasPrefix(token, identity.JoinTokenPrefix):
		return "", fmt.Errorf("%w: a join token was presented (node agents report with their SVID)", errAckNotAgent)
	}
	var svid string
	if p, ok := peerSVID(ctx); ok && p.Presented {
		svid = p.ID.String()
	}
	now := s.cfg.Clock.Now()
	if slot, ok := s.acks.lookup(token, svid, now); ok {
		return slot, nil
	}
	caller, err := s.authenticate(ctx)
	if err != nil {
		return "", err
	}
	if caller.Instance == "" {
		return "", fmt.Errorf("%w: %s (%s) is bound to no pod", errAckNotAgent, caller.ID, caller.Attestor)
	}
	slot := ackSlot(caller)
	s.acks.remember(token, svid, slot, now)
	return slot, nil
}

// ackSlot names a workload-mode agent's slot. '#' cannot occur in a SPIFFE
// ID, so no slot can be mistaken for a node agent's.
func ackSlot(caller identity.Identity) string {
	return caller.ID.String() + "#" + caller.Instance
}

// authenticateNode admits node agents by their SVID over mTLS.
func (s *Service) authenticateNode(ctx context.Context) (identity.Identity, error) {
	p, ok := peerSVID(ctx)
	if !ok || !p.Presented {
		return identity.Identity{}, errAckNoCredential
	}
	caller, err := s.authenticateSVID(p)
	if err != nil {
		return identity.Identity{}, err
	}
	if !isNode(caller.ID) {
		return identity.Identity{}, fmt.Errorf("%w: %s", errAckNotAgent, caller.ID)
	}
	return caller, nil
}

// record stores a well-formed report in its agent's one slot, replacing
// the agent's previous report.
func (r *AckRegistry) record(key string, rep wire.AckReport) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	if _, ok := r.reports[key]; !ok && len(r.reports) >= maxAckAgents {
		return errTooManyAgents
	}
	r.reports[key] = ackEntry{AckReport: rep, seen: r.clock.Now()}
	return nil
}

// maxAckAgents bounds the registry's memory: one slot per node agent or
// workload-mode pod.
const maxAckAgents = 100000

func (r *AckRegistry) prune() {
	now := r.clock.Now()
	for k, e := range r.reports {
		if now.Sub(e.seen) > wire.AckLiveness {
			delete(r.reports, k)
		}
	}
}

// Gate says whether every live agent holds the bundle with the given roots
// and how many watchers (or agents, when an agent's own bundle is behind)
// still lag. It is the CA's rotation gate: AckSummary.Gate over the
// reports, unfolded, so a registry and its summary count alike.
func (r *AckRegistry) Gate(roots [32]byte) (ok bool, lagging int) {
	return AckSummary{Bundles: r.totals()}.Gate(roots)
}

// Agents is how many live agents have reported.
func (r *AckRegistry) Agents() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	return len(r.reports)
}

// AckTotals is what a group of agents holding one bundle contributes to the
// rotation gate: Lagging when that bundle is the one wanted, Behind when
// another is. Keeping both lets a summary answer the gate for any bundle.
type AckTotals struct {
	Agents   int `json:"agents"`
	Watchers int `json:"watchers"`
	// Lagging sums the agents' watchers that do not hold the agents' bundle.
	Lagging int `json:"lagging"`
	// Behind sums max(watchers, 1): an agent behind the wanted bundle counts
	// all its watchers, or itself when it has none (as Gate counts it).
	Behind int `json:"behind"`
}

func (t *AckTotals) add(o AckTotals) {
	t.Agents += o.Agents
	t.Watchers += o.Watchers
	t.Lagging += o.Lagging
	t.Behind += o.Behind
}

// MaxSummaryBundles bounds how many bundles an AckSummary lists one by one,
// so that the summary fits in an annotation whatever agents report. In
// practice there are one to three (the old bundle, the one with the
// prepared root, the one without the retired root).
const MaxSummaryBundles = 16

// AckSummary is an AckRegistry folded by bundle: enough for another replica
// to answer Gate for any roots without the per-agent reports. Bundles beyond
// MaxSummaryBundles (the ones fewest agents hold) are folded into Other,
// which always counts as behind: folding can only hold a rotation longer,
// never let it through early.
type AckSummary struct {
	// Bundles maps a hex wire.BundleDigest to its agents' totals.
	Bundles map[string]AckTotals `json:"bundles,omitempty"`
	Other   AckTotals            `json:"other,omitzero"`
}

// ErrBadAckSummary: a summary (read from another replica) is malformed.
var ErrBadAckSummary = errors.New("service: malformed bundle acknowledgement summary")

// Summary folds the live reports by bundle.
func (r *AckRegistry) Summary() AckSummary {
	return foldSummary(r.totals(), MaxSummaryBundles)
}

// totals adds up the live reports by bundle.
func (r *AckRegistry) totals() map[string]AckTotals {
	all := map[string]AckTotals{}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	for _, e := range r.reports {
		t := all[e.Bundle]
		t.add(agentTotals(e.AckReport))
		all[e.Bundle] = t
	}
	return all
}

// agentTotals is what one agent's report counts for. Validate refuses
// counts out of range before a report is recorded; they are clamped to
// [0, maxAckCount] all the same, so that no report can cancel another
// agent's lag or overflow a sum.
func agentTotals(rep wire.AckReport) AckTotals {
	w, l := min(max(rep.Watchers, 0), maxAckCount), min(max(rep.Lagging, 0), maxAckCount)
	return AckTotals{Agents: 1, Watchers: w, Lagging: l, Behind: max(w, 1)}
}

// foldSummary keeps the limit bundles most agents hold (ties by digest, so
// equal registries give equal summaries) and folds the rest into Other.
func foldSummary(all map[string]AckTotals, limit int) AckSummary {
	s := AckSummary{}
	if len(all) == 0 {
		return s
	}
	digests := make([]string, 0, len(all))
	for d := range all {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(a, b string) int {
		if c := cmp.Compare(all[b].Agents, all[a].Agents); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	s.Bundles = make(map[string]AckTotals, min(len(digests), limit))
	for i, d := range digests {
		if i < limit {
			s.Bundles[d] = all[d]
		} else {
			s.Other.add(all[d])
		}
	}
	return s
}

// Gate answers the rotation gate for this summary's agents: the one place
// the gate is computed. AckRegistry.Gate is this over its unfolded reports,
// so a summary answers exactly as its registry unless bundles were folded
// into Other (which count as behind).
func (s AckSummary) Gate(roots [32]byte) (ok bool, lagging int) {
	want := hex.EncodeToString(roots[:])
	for d, t := range s.Bundles {
		if d == want {
			lagging += t.Lagging
		} else {
			lagging += t.Behind
		}
	}
	lagging += s.Other.Behind
	return lagging == 0, lagging
}

// Agents is how many live agents the summary covers.
func (s AckSummary) Agents() int {
	n := s.Other.Agents
	for _, t := range s.Bundles {
		n += t.Agents
	}
	return n
}

// Validate checks a summary read from elsewhere: digests are 64 lowercase
// hex digits, counts are in range, and there are at most
// MaxSummaryBundles bundles.
func (s AckSummary) Validate() error {
	if len(s.Bundles) > MaxSummaryBundles {
		return fmt.Errorf("%w: %d bundles (at most %d)", ErrBadAckSummary, len(s.Bundles), MaxSummaryBundles)
	}
	for d, t := range s.Bundles {
		if b, err := hex.DecodeString(d); err != nil || len(b) != 32 || d != hex.EncodeToString(b) {
			return fmt.Errorf("%w: bundle %.80q is not a hex SHA-256 digest", ErrBadAckSummary, d)
		}
		if !t.valid() {
			return fmt.Errorf("%w: count out of range for bundle %s", ErrBadAckSummary, d)
		}
	}
	if !s.Other.valid() {
		return fmt.Errorf("%w: count out of range in other", ErrBadAckSummary)
	}
	return nil
}

// maxAckCount bounds one agent's counts in a summary, and
// maxSummaryCount a summary's totals, so that adding up the summaries of
// many replicas cannot overflow.
const (
	maxAckCount     = wire.MaxAckWatchers
	maxSummaryCount = 1 << 40
)

func (t AckTotals) valid() bool {
	for _, n := range []int{t.Agents, t.Watchers, t.Lagging, t.Behind} {
		if n < 0 || n > maxSummaryCount {
			return false
		}
	}
	return true
}
