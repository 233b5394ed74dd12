package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"k8s.io/utils/clock"
)

// Node agents — and any identity that joined with a token — can be taken
// back, as SPIRE's `agent evict` and `agent ban`:
//
//   - evicted: every SVID the node holds from before the eviction is
//     refused — its renewals, its JWT-SVIDs and its impersonations — from
//     the next request on. The node may join again with a new join token.
//   - banned: refused whatever SVID it holds, and a join token for its ID
//     is refused too, until the ban is lifted by evicting it (which lets it
//     rejoin).
var (
	ErrNodeEvicted  = NewRefusal(codes.PermissionDenied, "node_evicted", "identity: node agent was evicted")
	ErrNodeBanned   = NewRefusal(codes.PermissionDenied, "node_banned", "identity: node agent is banned")
	ErrNotEvictable = errors.New("identity: only node agents and identities that joined with a token can be evicted or banned")
)

// NodeState is where a node agent stands.
type NodeState string

// Node states.
const (
	NodeActive  NodeState = "active"
	NodeEvicted NodeState = "evicted"
	NodeBanned  NodeState = "banned"
)

// Node is what the CA knows of one node agent.
type Node struct {
	ID        string    `json:"id"`
	State     NodeState `json:"state"`
	FirstSeen time.Time `json:"firstSeen,omitzero"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	// Since is when the node was last evicted or banned: SVIDs issued
	// before it are refused.
	Since time.Time `json:"since,omitzero"`
}

// NodesConfig configures NewNodes.
type NodesConfig struct {
	TrustDomain spiffeid.TrustDomain
	Clock       clock.PassiveClock
	// Store persists evictions and bans (DIR/nodes.json); nil keeps them in
	// memory only.
	Store TokenStore
}

// Nodes is the CA's register of node agents and of every identity that
// joined with a token (what grants such an identity after its token is
// spent is this register). Evictions and bans are saved before they take
// effect, so a restart never forgets one; last-seen times are kept in
// memory and saved with the next change.
type Nodes struct {
	td    spiffeid.TrustDomain
	clock clock.PassiveClock
	store TokenStore

	mu    sync.Mutex
	nodes map[spiffeid.ID]*Node
}

// nodesStateVersion is bumped when the persisted format changes.
const nodesStateVersion = 1

type nodesState struct {
	Version int    `json:"version"`
	Nodes   []Node `json:"nodes"`
}

// NewNodes loads the register. A file that does not decode stops the start.
func NewNodes(cfg NodesConfig) (*Nodes, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("identity: nodes: trust domain is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	n := &Nodes{td: cfg.TrustDomain, clock: cfg.Clock, store: cfg.Store, nodes: map[spiffeid.ID]*Node{}}
	if err := n.load(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Nodes) load() error {
	var st nodesState
	if _, err := loadState(n.store, "nodes", &st, func() int { return st.Version }, nodesStateVersion); err != nil {
		return err
	}
	for _, rec := range st.Nodes {
		id, err := spiffeid.FromString(rec.ID)
		if err != nil {
			return fmt.Errorf("identity: nodes: %q is not a SPIFFE ID", rec.ID)
		}
		switch rec.State {
		case NodeActive, NodeEvicted, NodeBanned:
		default:
			return fmt.Errorf("identity: nodes: %s has unknown state %q", rec.ID, rec.State)
		}
		n.nodes[id] = &rec
	}
	return nil
}

// saveLocked writes the whole register; on failure the caller undoes its
// change, so memory never promises what the disk does not hold.
func (n *Nodes) saveLocked() error {
	if n.store == nil {
		return nil
	}
	st := nodesState{Version: nodesStateVersion}
	for _, rec := range n.nodes {
		st.Nodes = append(st.Nodes, *rec)
	}
	slices.SortFunc(st.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := n.store.Save(data); err != nil {
		return fmt.Errorf("identity: nodes: save: %w", err)
	}
	return nil
}

// Check decides whether the holder of an SVID for id issued at issuedAt may
// act now. known is false for an ID the register never saw: a node agent's
// is recorded (it joined before the register existed) and passes; for any
// other ID the caller decides.
func (n *Nodes) Check(id spiffeid.ID, issuedAt time.Time) (known bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	rec := n.nodes[id]
	if rec == nil {
		if IsNode(id) {
			n.nodes[id] = &Node{ID: id.String(), State: NodeActive, FirstSeen: now, LastSeen: now}
		}
		return false, nil
	}
	switch {
	case rec.State == NodeBanned:
		return true, fmt.Errorf("%w: %s (since %s)", ErrNodeBanned, id, rec.Since.Format(time.RFC3339))
	case issuedAt.Before(rec.Since):
		return true, fmt.Errorf("%w: %s holds an SVID issued %s, before its eviction at %s", ErrNodeEvicted, id, issuedAt.Format(time.RFC3339), rec.Since.Format(time.RFC3339))
	}
	rec.LastSeen = now
	return true, nil
}

// Joined records an identity that just redeemed a join token, saved at
// once (its later renewals depend on it): a banned one is refused; an
// evicted one is active again.
func (n *Nodes) Joined(id spiffeid.ID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	rec := n.nodes[id]
	if rec == nil {
		n.nodes[id] = &Node{ID: id.String(), State: NodeActive, FirstSeen: now, LastSeen: now}
		if err := n.saveLocked(); err != nil {
			delete(n.nodes, id)
			return err
		}
		return nil
	}
	if rec.State == NodeBanned {
		return fmt.Errorf("%w: %s may not join again", ErrNodeBanned, id)
	}
	prev := *rec
	rec.State, rec.LastSeen = NodeActive, now
	if prev.State != NodeActive {
		if err := n.saveLocked(); err != nil {
			*rec = prev
			return err
		}
	}
	return nil
}

// Evict refuses every SVID id holds from now on; it may join again (from
// the next second on).
// Evicting a banned node lifts the ban.
func (n *Nodes) Evict(id spiffeid.ID) (Node, error) { return n.set(id, NodeEvicted) }

// Ban refuses id now and for good, rejoining included.
func (n *Nodes) Ban(id spiffeid.ID) (Node, error) { return n.set(id, NodeBanned) }

func (n *Nodes) set(id spiffeid.ID, state NodeState) (Node, error) {
	if !id.MemberOf(n.td) || (IsReserved(id) && !IsNode(id)) {
		return Node{}, fmt.Errorf("%w: %q", ErrNotEvictable, id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	rec, known := n.nodes[id]
	var prev Node
	if known {
		prev = *rec
	} else {
		rec = &Node{ID: id.String()}
		n.nodes[id] = rec
	}
	// Certificates carry whole seconds: an SVID issued in the second of the
	// eviction reads as issued at its start, so Since is the next second.
	rec.State, rec.Since = state, now.Truncate(time.Second).Add(time.Second)
	if err := n.saveLocked(); err != nil {
		if known {
			*rec = prev
		} else {
			delete(n.nodes, id)
		}
		return Node{}, err
	}
	return *rec, nil
}

// Banned reports whether id is banned.
func (n *Nodes) Banned(id spiffeid.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	rec := n.nodes[id]
	return rec != nil && rec.State == NodeBanned
}

// List returns every node the CA knows, sorted by ID.
func (n *Nodes) List() []Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Node, 0, len(n.nodes))
	for _, rec := range n.nodes {
		out = append(out, *rec)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return out
}
