package identity

import (
	"errors"
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
		}
	})
}
