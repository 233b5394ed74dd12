package identity

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// Field names of the registrations file. Unknown keys are rejected so that
// a typo such as "uuid:" fails loudly instead of silently widening access.
const (
	keyTrustDomain = "trustDomain"
	keyWorkloads   = "workloads"
	keySPIFFEID    = "spiffeID"
	keyUID         = "uid"
	keyGID         = "gid"
	keyDNSNames    = "dnsNames"
	keyEdgeCerts   = "edgeCertificates"
	keyNodes       = "nodes"
)

// selector identifies what an entry matches on, to refuse two entries that
// would compete for the same callers.
type selector struct {
	hasUID, hasGID bool
	uid, gid       uint32
}

// regParser walks yaml.v3 nodes rather than decoding into structs, because
// only nodes carry the line numbers our errors must name.
type regParser struct {
	source string
	td     spiffeid.TrustDomain
}

func (p *regParser) errAt(line int, format string, args ...any) error {
	return &RegistrationError{Source: p.source, Line: line, Err: fmt.Errorf(format, args...)}
}

func (p *regParser) parse(data []byte) (*Registrations, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &RegistrationError{Source: p.source, Err: err}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, p.errAt(0, "missing %s", keyTrustDomain)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errAt(root.Line, "top level must be a mapping")
	}
	fields, err := p.fields(root, keyTrustDomain, keyWorkloads)
	if err != nil {
		return nil, err
	}
	if err := p.parseTrustDomain(root, fields[keyTrustDomain]); err != nil {
		return nil, err
	}
	r := &Registrations{td: p.td, byID: map[spiffeid.ID]int{}}
	if wl := fields[keyWorkloads]; wl != nil {
		if err := p.parseWorkloads(r, wl); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// fields maps each key of a mapping node to its value node, refusing
// unknown and repeated keys.
func (p *regParser) fields(m *yaml.Node, allowed ...string) (map[string]*yaml.Node, error) {
	out := make(map[string]*yaml.Node, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, p.errAt(k.Line, "mapping key must be a plain string")
		}
		if !contains(allowed, k.Value) {
			return nil, p.errAt(k.Line, "unknown field %q (want one of %s)", k.Value, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.errAt(k.Line, "field %q repeated", k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *regParser) parseTrustDomain(root, n *yaml.Node) error {
	if n == nil {
		return p.errAt(root.Line, "missing %s", keyTrustDomain)
	}
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		return p.errAt(n.Line, "%s must be a non-empty string", keyTrustDomain)
	}
	if strings.Contains(n.Value, "/") {
		return p.errAt(n.Line, "%s %q must be a bare name such as example.org", keyTrustDomain, n.Value)
	}
	td, err := spiffeid.TrustDomainFromString(n.Value)
	if err != nil {
		return p.errAt(n.Line, "invalid %s %q: %w", keyTrustDomain, n.Value, err)
	}
	p.td = td
	return nil
}

func (p *regParser) parseWorkloads(r *Registrations, n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return p.errAt(n.Line, "%s must be a list", keyWorkloads)
	}
	// Entries sharing a selector may coexist only on disjoint nodes.
	selectors := map[selector][]int{}
	for _, item := range n.Content {
		e, err := p.parseEntry(item)
		if err != nil {
			return err
		}
		if prev, dup := r.byID[e.ID]; dup {
			return p.errAt(e.Line, "spiffeID %q already registered at line %d", e.ID, r.entries[prev].Line)
		}
		sel := selectorOf(e)
		for _, i := range selectors[sel] {
			if prev := r.entries[i]; prev.sharesNode(e) {
				return p.errAt(e.Line, "selector %s already claimed by entry at line %d on a node both may run on (give each its own %s)", describeSelector(sel), prev.Line, keyNodes)
			}
		}
		selectors[sel] = append(selectors[sel], len(r.entries))
		r.byID[e.ID] = len(r.entries)
		r.entries = append(r.entries, e)
	}
	return nil
}

func selectorOf(e Entry) selector {
	var s selector
	if e.UID != nil {
		s.hasUID, s.uid = true, *e.UID
	}
	if e.GID != nil {
		s.hasGID, s.gid = true, *e.GID
	}
	return s
}

func describeSelector(s selector) string {
	var parts []string
	if s.hasUID {
		parts = append(parts, fmt.Sprintf("uid %d", s.uid))
	}
	if s.hasGID {
		parts = append(parts, fmt.Sprintf("gid %d", s.gid))
	}
	return strings.Join(parts, " ")
}

func (p *regParser) parseEntry(n *yaml.Node) (Entry, error) {
	if n.Kind != yaml.MappingNode {
		return Entry{}, p.errAt(n.Line, "workload entry must be a mapping")
	}
	f, err := p.fields(n, keySPIFFEID, keyUID, keyGID, keyDNSNames, keyEdgeCerts, keyNodes)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Line: n.Line}
	if e.ID, err = p.parseID(n, f[keySPIFFEID]); err != nil {
		return Entry{}, err
	}
	if e.UID, err = p.parseUint32(keyUID, f[keyUID]); err != nil {
		return Entry{}, err
	}
	if e.GID, err = p.parseUint32(keyGID, f[keyGID]); err != nil {
		return Entry{}, err
	}
	if e.UID == nil && e.GID == nil {
		return Entry{}, p.errAt(n.Line, "entry %q has no selector (set %s and/or %s)", e.ID, keyUID, keyGID)
	}
	if e.DNSNames, err = p.parseDNSNames(f[keyDNSNames]); err != nil {
		return Entry{}, err
	}
	if e.EdgeCertificates, err = p.parseEdgeNames(f[keyEdgeCerts]); err != nil {
		return Entry{}, err
	}
	if e.Nodes, e.AnyNode, err = p.parseNodes(f[keyNodes]); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// parseNodes reads the node agents an entry is scoped to: SPIFFE IDs in the
// trust domain under NodePathPrefix, each once, or ["*"] for any node agent.
// An empty list is refused rather than read as "any node".
func (p *regParser) parseNodes(n *yaml.Node) (nodes []spiffeid.ID, everyNode bool, err error) {
	if n == nil {
		return nil, false, nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return nil, false, p.errAt(n.Line, "%s must be a non-empty list of node agent SPIFFE IDs, or [\"*\"] for any node", keyNodes)
	}
	if n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Value == AnyNodeWildcard {
		if len(n.Content) > 1 {
			return nil, false, p.errAt(n.Line, "%s: %q stands alone (it already means every node)", keyNodes, AnyNodeWildcard)
		}
		return nil, true, nil
	}
	nodes = make([]spiffeid.ID, 0, len(n.Content))
	for _, item := range n.Content {
		id, err := p.parseNode(item)
		if err != nil {
			return nil, false, err
		}
		if slices.Contains(nodes, id) {
			return nil, false, p.errAt(item.Line, "node %q listed twice", item.Value)
		}
		nodes = append(nodes, id)
	}
	return nodes, false, nil
}

// AnyNodeWildcard in an entry's nodes says that any node agent may ask for it.
const AnyNodeWildcard = "*"

func (p *regParser) parseNode(item *yaml.Node) (spiffeid.ID, error) {
	if item.Kind != yaml.ScalarNode {
		return spiffeid.ID{}, p.errAt(item.Line, "node must be a SPIFFE ID string")
	}
	id, err := spiffeid.FromString(item.Value)
	if err != nil {
		return spiffeid.ID{}, p.errAt(item.Line, "malformed node %q: %w", item.Value, err)
	}
	if !id.MemberOf(p.td) {
		return spiffeid.ID{}, p.errAt(item.Line, "node %q is outside trust domain %q", item.Value, p.td.Name())
	}
	if !IsNode(id) {
		return spiffeid.ID{}, p.errAt(item.Line, "node %q is not a node agent's ID (its path must start with %s)", item.Value, NodePathPrefix)
	}
	return id, nil
}

func (p *regParser) parseID(entry, n *yaml.Node) (spiffeid.ID, error) {
	if n == nil {
		return spiffeid.ID{}, p.errAt(entry.Line, "entry is missing %s", keySPIFFEID)
	}
	if n.Kind != yaml.ScalarNode {
		return spiffeid.ID{}, p.errAt(n.Line, "%s must be a string", keySPIFFEID)
	}
	id, err := spiffeid.FromString(n.Value)
	if err != nil {
		return spiffeid.ID{}, p.errAt(n.Line, "malformed spiffeID %q: %w", n.Value, err)
	}
	if !id.MemberOf(p.td) {
		return spiffeid.ID{}, p.errAt(n.Line, "spiffeID %q is outside trust domain %q", n.Value, p.td.Name())
	}
	if id.Path() == "" {
		return spiffeid.ID{}, p.errAt(n.Line, "spiffeID %q names the trust domain itself, not a workload", n.Value)
	}
	if IsReserved(id) {
		return spiffeid.ID{}, p.errAt(n.Line, "spiffeID %q is reserved: paths under %s are certmesh's own (node agents and the server)", n.Value, ReservedPathPrefix)
	}
	return id, nil
}

func (p *regParser) parseUint32(key string, n *yaml.Node) (*uint32, error) {
	if n == nil {
		return nil, nil
	}
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		return nil, p.errAt(n.Line, "%s must be an integer, got %q", key, n.Value)
	}
	if v < 0 || v > math.MaxUint32 {
		return nil, p.errAt(n.Line, "%s %d out of range 0..%d", key, v, uint32(math.MaxUint32))
	}
	u := uint32(v)
	return &u, nil
}

func (p *regParser) parseDNSNames(n *yaml.Node) ([]string, error) {
	if n == nil {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errAt(n.Line, "%s must be a list", keyDNSNames)
	}
	names := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			return nil, p.errAt(item.Line, "DNS name must be a string")
		}
		if err := validateDNSName(item.Value); err != nil {
			return nil, p.errAt(item.Line, "invalid DNS name %q: %w", item.Value, err)
		}
		names = append(names, item.Value)
	}
	return names, nil
}

var (
	errDNSLength = errors.New("must be 1 to 253 characters")
	errDNSLabel  = errors.New("labels must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")
)

// ValidateDNSName reports whether name is a host name certmesh puts in a
// certificate (validateDNSName's rules); ca/server checks its serving names with it.
func ValidateDNSName(name string) error { return validateDNSName(name) }

// validateDNSName accepts lower-case host names only: no wildcards, no
// trailing dot, no upper case, so the SAN in the certificate is exactly the
// string in the file and compares byte-for-byte.
func validateDNSName(name string) error {
	if len(name) == 0 || len(name) > 253 {
		return errDNSLength
	}
	for _, label := range strings.Split(name, ".") {
		if !validDNSLabel(label) {
			return errDNSLabel
		}
	}
	return nil
}

func validDNSLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parseEdgeNames reads the edge certificates an entry may fetch over SDS
// (an ingress gateway's). Names are edge certificate names: DNS-like labels.
func (p *regParser) parseEdgeNames(n *yaml.Node) ([]string, error) {
	if n == nil {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errAt(n.Line, "%s must be a list", keyEdgeCerts)
	}
	names := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode || validateDNSName(item.Value) != nil {
			return nil, p.errAt(item.Line, "invalid edge certificate name %q (lower-case letters, digits, '-' and '.')", item.Value)
		}
		names = append(names, item.Value)
	}
	return names, nil
}
