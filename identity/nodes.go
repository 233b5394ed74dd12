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

// NodeStore persists the register one record at a time, so that replicas
// sharing it (Kubernetes) never overwrite each other's records.
type NodeStore interface {
	LoadNodes() ([]Node, error)
	SaveNode(Node) error
}

// NodesConfig configures NewNodes.
type NodesConfig struct {
	TrustDomain spiffeid.TrustDomain
	Clock       clock.PassiveClock
	// Store persists evictions and bans (NodesFile: DIR/nodes.json; in
	// Kubernetes a ConfigMap all replicas share); nil keeps them in memory.
	Store NodeStore
}

// Nodes is the CA's register of node agents and of every identity that
// joined with a token (what grants such an identity after its token is
// spent is this register). Evictions and bans are saved before they take
// effect, so a restart never forgets one; last-seen times are kept in
// memory and saved with the next change of the node's record.
type Nodes struct {
	td    spiffeid.TrustDomain
	clock clock.PassiveClock
	store NodeStore

	mu    sync.Mutex
	nodes map[spiffeid.ID]*Node
}

// NewNodes loads the register. A store that does not decode stops the start.
func NewNodes(cfg NodesConfig) (*Nodes, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("identity: nodes: trust domain is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	n := &Nodes{td: cfg.TrustDomain, clock: cfg.Clock, store: cfg.Store, nodes: map[spiffeid.ID]*Node{}}
	if err := n.Reload(); err != nil {
		return nil, err
	}
	return n, nil
}

// Reload takes in what the store holds now: another replica's eviction or
// ban applies here from the next request. Last-seen times stay this
// replica's own where they are newer.
func (n *Nodes) Reload() error {
	if n.store == nil {
		return nil
	}
	recs, err := n.store.LoadNodes()
	if err != nil {
		return fmt.Errorf("identity: nodes: load: %w", err)
	}
	loaded := make(map[spiffeid.ID]Node, len(recs))
	for _, rec := range recs {
		id, err := checkNode(rec)
		if err != nil {
			return err
		}
		loaded[id] = rec
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, rec := range loaded {
		if cur := n.nodes[id]; cur != nil && cur.LastSeen.After(rec.LastSeen) {
			rec.LastSeen = cur.LastSeen
		}
		n.nodes[id] = &rec
	}
	return nil
}

func checkNode(rec Node) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(rec.ID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: nodes: %q is not a SPIFFE ID", rec.ID)
	}
	switch rec.State {
	case NodeActive, NodeEvicted, NodeBanned:
	default:
		return spiffeid.ID{}, fmt.Errorf("identity: nodes: %s has unknown state %q", rec.ID, rec.State)
	}
	return id, nil
}

// saveLocked writes rec; on failure the caller undoes its change, so memory
// never promises what the store does not hold.
func (n *Nodes) saveLocked(rec *Node) error {
	if n.store == nil {
		return nil
	}
	if err := n.store.SaveNode(*rec); err != nil {
		return fmt.Errorf("identity: nodes: save: %w", err)
	}
	return nil
}

// nodesStateVersion is bumped when the format of NodesFile changes.
const nodesStateVersion = 1

type nodesState struct {
	Version int    `json:"version"`
	Nodes   []Node `json:"nodes"`
}

// NodesFile keeps the register in one file (DIR/nodes.json) through store,
// for one process.
func NodesFile(store TokenStore) NodeStore { return &nodesFile{store: store} }

type nodesFile struct {
	mu    sync.Mutex
	store TokenStore
}

func (f *nodesFile) LoadNodes() ([]Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *nodesFile) loadLocked() ([]Node, error) {
	var st nodesState
	if _, err := loadState(f.store, "nodes", &st, func() int { return st.Version }, nodesStateVersion); err != nil {
		return nil, err
	}
	return st.Nodes, nil
}

func (f *nodesFile) SaveNode(rec Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	nodes, err := f.loadLocked()
	if err != nil {
		return err
	}
	nodes = slices.DeleteFunc(nodes, func(n Node) bool { return n.ID == rec.ID })
	nodes = append(nodes, rec)
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	data, err := json.MarshalIndent(nodesState{Version: nodesStateVersion, Nodes: nodes}, "", "  ")
	if err != nil {
		return err
	}
	return f.store.Save(data)
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
		rec := &Node{ID: id.String(), State: NodeActive, FirstSeen: now, LastSeen: now}
		n.nodes[id] = rec
		if err := n.saveLocked(rec); err != nil {
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
		if err := n.saveLocked(rec); err != nil {
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
	if !id.MemberOf(n.td) || (IsReserved(id) && !IsNode(id) && !IsDownstream(id)) {
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
	if err := n.saveLocked(rec); err != nil {
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
