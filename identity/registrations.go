package identity

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Entry grants a SPIFFE ID (and DNS SANs) to callers whose unix peer
// credentials match its selectors. A nil UID or GID means "any".
type Entry struct {
	ID       spiffeid.ID
	UID, GID *uint32
	DNSNames []string
	// EdgeCertificates are edge (ACME) certificate names this workload may
	// fetch over SDS: an ingress gateway's.
	EdgeCertificates []string
	// Nodes, when set, are the node agents (IDs under NodePathPrefix) that may
	// ask for this identity on the workload's behalf, as SPIRE's parentID
	// scopes an entry: a node that is broken into yields only the identities
	// of its own workloads. AnyNode (`nodes: ["*"]`) says any node agent may,
	// on purpose. With neither the entry is unscoped: any node agent may,
	// which only `certmesh dev` (one in-process agent) accepts (Scoped).
	Nodes   []spiffeid.ID
	AnyNode bool
	// Line is where the entry starts in the registrations file, so that
	// logs and errors about it point at something an operator can edit.
	Line int
}

// NodePathPrefix marks node agents' identities (from join tokens): only they
// may ask for the certificates of registered workloads.
const NodePathPrefix = "/certmesh/node/"

// ReservedPathPrefix holds certmesh's own identities: node agents' (under
// NodePathPrefix), downstream servers' (DownstreamPathPrefix) and the
// server's. No registration may claim one, and a join token only a node
// agent's or a downstream's, so no workload can pose as a node agent, a
// downstream CA or the CA.
const ReservedPathPrefix = "/certmesh/"

// IsReserved reports whether id lies under ReservedPathPrefix.
func IsReserved(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), ReservedPathPrefix) }

// IsNode reports whether id is a node agent's identity.
func IsNode(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), NodePathPrefix) }

// OnNode reports whether node's agent may ask for the entry's identity: the
// entry lists node, or is any node's.
func (e Entry) OnNode(node spiffeid.ID) bool {
	return e.anyNode() || slices.Contains(e.Nodes, node)
}

// anyNode reports whether every node agent may ask for the entry.
func (e Entry) anyNode() bool { return e.AnyNode || len(e.Nodes) == 0 }

// sharesNode reports whether some node agent could serve both entries, so
// that their selectors would compete on it.
func (e Entry) sharesNode(o Entry) bool {
	return e.anyNode() || o.anyNode() || slices.ContainsFunc(e.Nodes, o.OnNode)
}

// matches reports whether every selector set on the entry matches the peer.
func (e Entry) matches(p PeerCred) bool {
	if e.UID == nil && e.GID == nil {
		return false
	}
	if e.UID != nil && *e.UID != p.UID {
		return false
	}
	return e.GID == nil || *e.GID == p.GID
}

// specificity ranks matching entries: uid+gid beats uid alone, which beats
// gid alone, because a uid names one account and a gid a group of them.
func (e Entry) specificity() int {
	s := 0
	if e.UID != nil {
		s += 2
	}
	if e.GID != nil {
		s++
	}
	return s
}

func (e Entry) clone() Entry {
	c := e
	if e.UID != nil {
		u := *e.UID
		c.UID = &u
	}
	if e.GID != nil {
		g := *e.GID
		c.GID = &g
	}
	c.DNSNames = slices.Clone(e.DNSNames)
	c.EdgeCertificates = slices.Clone(e.EdgeCertificates)
	c.Nodes = slices.Clone(e.Nodes)
	return c
}

// RegistrationError reports a problem in a registrations file with the
// source and line, because these errors stop the server at startup and the
// operator needs to know exactly what to fix.
type RegistrationError struct {
	Source string
	Line   int // 0 when the problem has no single line (e.g. a YAML syntax error)
	Err    error
}

// Error implements error.
func (e *RegistrationError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("identity: %s:%d: %v", e.Source, e.Line, e.Err)
	}
	return fmt.Sprintf("identity: %s: %v", e.Source, e.Err)
}

// Unwrap returns the underlying error.
func (e *RegistrationError) Unwrap() error { return e.Err }

// Registrations is a parsed, validated registrations file. It is immutable
// after parsing and therefore safe for concurrent use; reloading means
// parsing a new one and swapping the pointer.
type Registrations struct {
	td      spiffeid.TrustDomain
	entries []Entry
	byID    map[spiffeid.ID]int
}

// LoadRegistrations reads and parses the registrations file at path.
func LoadRegistrations(path string) (*Registrations, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: load registrations: %w", err)
	}
	return ParseRegistrations(data, path)
}

// ParseRegistrations parses a registrations file. source names the file in
// error messages. Every entry is validated up front so a bad file fails at
// startup rather than when the first workload asks for an SVID.
func ParseRegistrations(data []byte, source string) (*Registrations, error) {
	p := &regParser{source: source}
	r, err := p.parse(data)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// ErrUnscopedEntry: a registrations file used by node agents has an entry
// that names no nodes. Such an entry would be every node's, so one node
// broken into would yield it; the operator must say which nodes, or "*".
var ErrUnscopedEntry = errors.New("entry lists no nodes")

// RequireNodes returns an error naming the first entry that lists no nodes
// (neither node agents nor "*"), with its line in source.
func (r *Registrations) RequireNodes(source string) error {
	for _, e := range r.entries {
		if len(e.Nodes) == 0 && !e.AnyNode {
			return &RegistrationError{Source: source, Line: e.Line, Err: fmt.Errorf("%w: %s: name the node agents that may ask for it (%s: [spiffe://%s%s…]) or %s: [%q] for any node",
				ErrUnscopedEntry, e.ID, keyNodes, r.td.Name(), NodePathPrefix, keyNodes, AnyNodeWildcard)}
		}
	}
	return nil
}

// Current is r itself: fixed registrations are always the ones in force.
func (r *Registrations) Current() *Registrations { return r }

// Len is the number of entries.
func (r *Registrations) Len() int { return len(r.entries) }

// TrustDomain is the trust domain every entry belongs to.
func (r *Registrations) TrustDomain() spiffeid.TrustDomain { return r.td }

// Entries returns a copy of the entries in file order.
func (r *Registrations) Entries() []Entry {
	out := make([]Entry, len(r.entries))
	for i, e := range r.entries {
		out[i] = e.clone()
	}
	return out
}

// MatchPeer returns the most specific entry matching the peer credentials.
// Selectors are unique per file, so there is never a tie. A nil
// *Registrations matches nothing, so a missing file denies rather than panics.
func (r *Registrations) MatchPeer(p PeerCred) (Entry, bool) {
	if r == nil {
		return Entry{}, false
	}
	best := -1
	for i, e := range r.entries {
		if !e.matches(p) {
			continue
		}
		if best < 0 || e.specificity() > r.entries[best].specificity() {
			best = i
		}
	}
	if best < 0 {
		return Entry{}, false
	}
	return r.entries[best].clone(), true
}

// ForNode is the registrations node's agent serves: the entries that list
// node or no nodes. Selectors are unique among them (the parser refuses two
// entries with one selector that could meet on a node).
func (r *Registrations) ForNode(node spiffeid.ID) *Registrations {
	out := &Registrations{td: r.td, byID: map[spiffeid.ID]int{}}
	for _, e := range r.entries {
		if e.OnNode(node) {
			out.byID[e.ID] = len(out.entries)
			out.entries = append(out.entries, e)
		}
	}
	return out
}

// Placement is the rule ForNode applies, read from src's version in force
// at every call: whether node's agent may serve workload. An unregistered
// workload is on no node. It is what a node agent is given (sds.Config's
// WorkloadOn), so that one file can be handed to every node's agent.
func Placement(src RegistrationsSource) func(workload, node spiffeid.ID) bool {
	return func(workload, node spiffeid.ID) bool {
		e, ok := src.Current().ByID(workload)
		return ok && e.OnNode(node)
	}
}

// ByID returns the entry granting id. A nil *Registrations grants nothing.
func (r *Registrations) ByID(id spiffeid.ID) (Entry, bool) {
	if r == nil {
		return Entry{}, false
	}
	i, ok := r.byID[id]
	if !ok {
		return Entry{}, false
	}
	return r.entries[i].clone(), true
}
