package identity

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRegistrations checks that no input panics, that every error is a
// *RegistrationError, and that accepted files satisfy the invariants the
// rest of certmesh relies on.
func FuzzParseRegistrations(f *testing.F) {
	f.Add([]byte(exampleRegistrations))
	f.Add([]byte("trustDomain: example.org\n"))
	f.Add([]byte("trustDomain: example.org\nworkloads:\n  - spiffeID: spiffe://example.org/a\n    gid: 0x10\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("trustDomain: example.org\nworkloads: [{spiffeID: spiffe://example.org/a, uid: 1, dnsNames: [a.b]}]\n"))
	f.Add([]byte("trustDomain: example.org\nworkloads:\n  - {spiffeID: spiffe://example.org/a, uid: 1, nodes: [spiffe://example.org/certmesh/node/n1]}\n  - {spiffeID: spiffe://example.org/b, uid: 1, nodes: [spiffe://example.org/certmesh/node/n2]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistrations(data, "fuzz.yaml")
		if err != nil {
			var regErr *RegistrationError
			if !errors.As(err, &regErr) {
				t.Fatalf("error %v is not a *RegistrationError", err)
			}
			return
		}
		for _, e := range r.Entries() {
			if !e.ID.MemberOf(r.TrustDomain()) {
				t.Fatalf("entry %v outside trust domain %v", e.ID, r.TrustDomain())
			}
			if e.UID == nil && e.GID == nil {
				t.Fatalf("entry %v has no selector", e.ID)
			}
			if got, ok := r.ByID(e.ID); !ok || got.Line != e.Line {
				t.Fatalf("ByID(%v) = %v, %v", e.ID, got, ok)
			}
			for _, n := range e.Nodes {
				if !n.MemberOf(r.TrustDomain()) || !strings.HasPrefix(n.Path(), NodePathPrefix) {
					t.Fatalf("entry %v scoped to %v, not a node agent of the trust domain", e.ID, n)
				}
			}
		}
		// No node agent may see two entries with one selector.
		entries := r.Entries()
		for i, a := range entries {
			for _, b := range entries[i+1:] {
				if selectorOf(a) == selectorOf(b) && a.sharesNode(b) {
					t.Fatalf("entries at lines %d and %d share a selector and a node", a.Line, b.Line)
				}
			}
		}
	})
}
