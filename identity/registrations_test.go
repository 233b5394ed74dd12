package identity

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

const exampleRegistrations = `trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/ns/default/sa/web
    uid: 0
    dnsNames: [web.default.svc]
  - spiffeID: spiffe://example.org/ns/default/sa/db
    uid: 1000
    gid: 1000        # optional
  - spiffeID: spiffe://example.org/ns/default/sa/users
    uid: 1000
  - spiffeID: spiffe://example.org/ns/default/sa/staff
    gid: 50
`

func u32(v uint32) *uint32 { return &v }

func TestParseRegistrationsValid(t *testing.T) {
	r, err := ParseRegistrations([]byte(exampleRegistrations), "registrations.yaml")
	require.NoError(t, err)
	require.Equal(t, "example.org", r.TrustDomain().Name())
	require.Equal(t, []Entry{
		{ID: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web"), UID: u32(0), DNSNames: []string{"web.default.svc"}, Line: 3},
		{ID: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/db"), UID: u32(1000), GID: u32(1000), Line: 6},
		{ID: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/users"), UID: u32(1000), Line: 9},
		{ID: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/staff"), GID: u32(50), Line: 11},
	}, r.Entries())
}

func TestParseRegistrationsEmptyWorkloads(t *testing.T) {
	for _, doc := range []string{"trustDomain: example.org\n", "trustDomain: example.org\nworkloads: []\n", "trustDomain: example.org\nworkloads:\n"} {
		r, err := ParseRegistrations([]byte(doc), "r.yaml")
		require.NoError(t, err, doc)
		require.Empty(t, r.Entries())
		_, ok := r.MatchPeer(PeerCred{UID: 0})
		require.False(t, ok)
	}
}

func TestEntriesReturnsCopy(t *testing.T) {
	r, err := ParseRegistrations([]byte(exampleRegistrations), "r.yaml")
	require.NoError(t, err)
	es := r.Entries()
	*es[0].UID = 42
	es[0].DNSNames[0] = "evil.example"
	again := r.Entries()
	require.Equal(t, uint32(0), *again[0].UID)
	require.Equal(t, "web.default.svc", again[0].DNSNames[0])
}

func TestMatchPeer(t *testing.T) {
	r, err := ParseRegistrations([]byte(exampleRegistrations), "r.yaml")
	require.NoError(t, err)
	tests := []struct {
		name   string
		peer   PeerCred
		wantID string // empty: no match
	}{
		{name: "uid only", peer: PeerCred{UID: 0, GID: 7}, wantID: "spiffe://example.org/ns/default/sa/web"},
		{name: "uid and gid beat uid alone", peer: PeerCred{UID: 1000, GID: 1000}, wantID: "spiffe://example.org/ns/default/sa/db"},
		{name: "uid alone when gid differs", peer: PeerCred{UID: 1000, GID: 1}, wantID: "spiffe://example.org/ns/default/sa/users"},
		{name: "uid beats gid", peer: PeerCred{UID: 1000, GID: 50}, wantID: "spiffe://example.org/ns/default/sa/users"},
		{name: "gid only", peer: PeerCred{UID: 5, GID: 50}, wantID: "spiffe://example.org/ns/default/sa/staff"},
		{name: "no match", peer: PeerCred{UID: 5, GID: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := r.MatchPeer(tt.peer)
			if tt.wantID == "" {
				require.False(t, ok)
				return
			}
			require.True(t, ok)
			require.Equal(t, tt.wantID, e.ID.String())
		})
	}
}

func TestByID(t *testing.T) {
	r, err := ParseRegistrations([]byte(exampleRegistrations), "r.yaml")
	require.NoError(t, err)
	e, ok := r.ByID(spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/db"))
	require.True(t, ok)
	require.Equal(t, 6, e.Line)
	_, ok = r.ByID(spiffeid.RequireFromString("spiffe://example.org/nope"))
	require.False(t, ok)
}

func TestParseRegistrationsErrors(t *testing.T) {
	const head = "trustDomain: example.org\nworkloads:\n"
	tests := []struct {
		name     string
		doc      string
		wantLine int
		wantMsg  string // full message when set
	}{
		{name: "empty document", doc: "", wantLine: 0},
		{name: "syntax error", doc: "trustDomain: [\n", wantLine: 0},
		{name: "top level list", doc: "- a\n", wantLine: 1},
		{name: "missing trust domain", doc: "workloads: []\n", wantLine: 1},
		{name: "invalid trust domain", doc: "trustDomain: Exa mple\n", wantLine: 1},
		{name: "trust domain as URI", doc: "trustDomain: spiffe://example.org\n", wantLine: 1},
		{name: "trust domain not scalar", doc: "trustDomain: [a]\n", wantLine: 1},
		{name: "unknown top field", doc: "trustDomain: example.org\nworkload: []\n", wantLine: 2},
		{name: "repeated field", doc: "trustDomain: example.org\ntrustDomain: example.org\n", wantLine: 2},
		{name: "workloads not list", doc: "trustDomain: example.org\nworkloads: {}\n", wantLine: 2},
		{name: "entry not mapping", doc: head + "  - x\n", wantLine: 3},
		{name: "unknown entry field", doc: head + "  - spiffeID: spiffe://example.org/a\n    uuid: 1\n", wantLine: 4},
		{name: "missing spiffeID", doc: head + "  - uid: 1\n", wantLine: 3},
		{name: "malformed spiffeID", doc: head + "  - spiffeID: https://example.org/a\n    uid: 1\n", wantLine: 3},
		{
			name:     "outside trust domain",
			doc:      head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n  - spiffeID: spiffe://other.org/x\n    uid: 2\n",
			wantLine: 5,
			wantMsg:  `identity: registrations.yaml:5: spiffeID "spiffe://other.org/x" is outside trust domain "example.org"`,
		},
		{name: "trust domain ID", doc: head + "  - spiffeID: spiffe://example.org\n    uid: 1\n", wantLine: 3},
		{name: "no selector", doc: head + "  - spiffeID: spiffe://example.org/a\n    dnsNames: [a.b]\n", wantLine: 3},
		{name: "negative uid", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: -1\n", wantLine: 4},
		{name: "uid too large", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 4294967296\n", wantLine: 4},
		{name: "uid string", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: \"1\"\n", wantLine: 4},
		{name: "gid float", doc: head + "  - spiffeID: spiffe://example.org/a\n    gid: 1.5\n", wantLine: 4},
		{name: "invalid DNS name", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    dnsNames:\n      - ok.example\n      - -bad.example\n", wantLine: 7},
		{name: "wildcard DNS name", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    dnsNames: ['*.example']\n", wantLine: 5},
		{name: "dnsNames not list", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    dnsNames: a.example\n", wantLine: 5},
		{
			name:     "duplicate selector",
			doc:      head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n  - spiffeID: spiffe://example.org/b\n    uid: 1\n",
			wantLine: 5,
			wantMsg:  "identity: registrations.yaml:5: selector uid 1 already claimed by entry at line 3 on a node both may run on (give each its own nodes)",
		},
		{
			name: "duplicate selector on a shared node",
			doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n1, spiffe://example.org/certmesh/node/n2]\n" +
				"  - spiffeID: spiffe://example.org/b\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n2]\n",
			wantLine: 6,
		},
		{
			name: "duplicate selector, one on any node",
			doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n1]\n" +
				"  - spiffeID: spiffe://example.org/b\n    uid: 1\n",
			wantLine: 6,
		},
		{name: "nodes empty", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: []\n", wantLine: 5},
		{name: "nodes wildcard among IDs", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: ['*', spiffe://example.org/certmesh/node/n1]\n", wantLine: 5},
		{name: "duplicate selector, one on every node", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: ['*']\n" +
			"  - spiffeID: spiffe://example.org/b\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n1]\n", wantLine: 6},
		{name: "reserved: a node agent's ID", doc: head + "  - spiffeID: spiffe://example.org/certmesh/node/n2\n    uid: 1\n", wantLine: 3},
		{
			name:     "reserved: the server's ID",
			doc:      head + "  - spiffeID: spiffe://example.org/certmesh/server\n    uid: 1\n",
			wantLine: 3,
			wantMsg:  `identity: registrations.yaml:3: spiffeID "spiffe://example.org/certmesh/server" is reserved: paths under /certmesh/ are certmesh's own (node agents and the server)`,
		},
		{name: "nodes not list", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: spiffe://example.org/certmesh/node/n1\n", wantLine: 5},
		{name: "node malformed", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [n1]\n", wantLine: 5},
		{
			name:     "node not a node agent",
			doc:      head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes:\n      - spiffe://example.org/ns/default/sa/web\n",
			wantLine: 6,
			wantMsg:  `identity: registrations.yaml:6: node "spiffe://example.org/ns/default/sa/web" is not a node agent's ID (its path must start with /certmesh/node/)`,
		},
		{name: "node in another trust domain", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [spiffe://other.org/certmesh/node/n1]\n", wantLine: 5},
		{name: "node twice", doc: head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n1, spiffe://example.org/certmesh/node/n1]\n", wantLine: 5},
		{
			name:     "duplicate spiffeID",
			doc:      head + "  - spiffeID: spiffe://example.org/a\n    uid: 1\n  - spiffeID: spiffe://example.org/a\n    uid: 2\n",
			wantLine: 5,
			wantMsg:  `identity: registrations.yaml:5: spiffeID "spiffe://example.org/a" already registered at line 3`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRegistrations([]byte(tt.doc), "registrations.yaml")
			require.Nil(t, r)
			var regErr *RegistrationError
			require.ErrorAs(t, err, &regErr)
			require.Equal(t, "registrations.yaml", regErr.Source)
			require.Equal(t, tt.wantLine, regErr.Line, err.Error())
			require.NotNil(t, errors.Unwrap(err))
			if tt.wantMsg != "" {
				require.Equal(t, tt.wantMsg, err.Error())
			}
		})
	}
}

// TestRegistrationsNodes: one file can describe every node. Entries scoped to
// disjoint nodes may share a selector; each node's agent sees its own entries
// and the unscoped ones.
func TestRegistrationsNodes(t *testing.T) {
	const doc = `trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/web
    uid: 1000
    nodes: [spiffe://example.org/certmesh/node/n1]
  - spiffeID: spiffe://example.org/db
    uid: 1000
    nodes: [spiffe://example.org/certmesh/node/n2, spiffe://example.org/certmesh/node/n3]
  - spiffeID: spiffe://example.org/log
    uid: 0
`
	r, err := ParseRegistrations([]byte(doc), "registrations.yaml")
	require.NoError(t, err)
	n1 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n1")
	n3 := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n3")
	other := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/other")
	ids := func(r *Registrations) (out []string) {
		for _, e := range r.Entries() {
			out = append(out, e.ID.Path())
		}
		return out
	}
	require.Equal(t, []string{"/web", "/log"}, ids(r.ForNode(n1)))
	require.Equal(t, []string{"/db", "/log"}, ids(r.ForNode(n3)))
	require.Equal(t, []string{"/log"}, ids(r.ForNode(other)))
	e, ok := r.ForNode(n3).MatchPeer(PeerCred{UID: 1000})
	require.True(t, ok)
	require.Equal(t, "/db", e.ID.Path(), "uid 1000 is db on n3")
	_, ok = r.ForNode(n3).ByID(spiffeid.RequireFromString("spiffe://example.org/web"))
	require.False(t, ok)
	web, _ := r.ByID(spiffeid.RequireFromString("spiffe://example.org/web"))
	require.True(t, web.OnNode(n1))
	require.False(t, web.OnNode(n3))
	placed := Placement(r)
	for _, node := range []spiffeid.ID{n1, n3, other} {
		for _, e := range r.Entries() {
			_, kept := r.ForNode(node).ByID(e.ID)
			require.Equal(t, kept, placed(e.ID, node), "Placement agrees with ForNode for %s on %s", e.ID, node)
		}
	}
	require.False(t, placed(spiffeid.RequireFromString("spiffe://example.org/unregistered"), n1))
	logEntry, _ := r.ByID(spiffeid.RequireFromString("spiffe://example.org/log"))
	require.True(t, logEntry.OnNode(other), "no nodes means any node")
}

func TestLoadRegistrations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registrations.yaml")
	require.NoError(t, os.WriteFile(path, []byte(exampleRegistrations), 0o600))
	r, err := LoadRegistrations(path)
	require.NoError(t, err)
	require.Len(t, r.Entries(), 4)

	_, err = LoadRegistrations(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("trustDomain: example.org\nbogus: 1\n"), 0o600))
	_, err = LoadRegistrations(bad)
	var regErr *RegistrationError
	require.ErrorAs(t, err, &regErr)
	require.Equal(t, bad, regErr.Source)
	require.Equal(t, 2, regErr.Line)
}

// TestRequireNodes: a file for remote node agents must scope every entry,
// to named nodes or to "*" on purpose.
func TestRequireNodes(t *testing.T) {
	const head = "trustDomain: example.org\nworkloads:\n"
	scoped, err := ParseRegistrations([]byte(head+
		"  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: [spiffe://example.org/certmesh/node/n1]\n"+
		"  - spiffeID: spiffe://example.org/b\n    uid: 2\n    nodes: ['*']\n"), "regs.yaml")
	require.NoError(t, err)
	require.NoError(t, scoped.RequireNodes("regs.yaml"))
	b, ok := scoped.ByID(spiffeid.RequireFromString("spiffe://example.org/b"))
	require.True(t, ok)
	require.True(t, b.AnyNode)
	require.True(t, b.OnNode(spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n9")))

	unscoped, err := ParseRegistrations([]byte(head+
		"  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: ['*']\n"+
		"  - spiffeID: spiffe://example.org/b\n    uid: 2\n"), "regs.yaml")
	require.NoError(t, err)
	err = unscoped.RequireNodes("regs.yaml")
	require.ErrorIs(t, err, ErrUnscopedEntry)
	var regErr *RegistrationError
	require.ErrorAs(t, err, &regErr)
	require.Equal(t, 6, regErr.Line)
}
