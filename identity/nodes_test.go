package identity

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

// fileStore is a TokenStore on one file, as the server's store.File is.
type fileStore string

func (f fileStore) Load() ([]byte, error) { return os.ReadFile(string(f)) }
func (f fileStore) Save(b []byte) error   { return os.WriteFile(string(f), b, 0o600) }

func TestNodesEvictBanRejoin(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(testStart)
	store := fileStore(filepath.Join(t.TempDir(), "nodes.json"))
	n, err := NewNodes(NodesConfig{TrustDomain: testTD, Clock: clk, Store: NodesFile(store)})
	require.NoError(t, err)
	node := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n1")
	vm := spiffeid.RequireFromString("spiffe://example.org/vm/db")

	known, err := n.Check(node, testStart)
	require.NoError(t, err)
	require.False(t, known, "first sight of a node agent")
	known, err = n.Check(vm, testStart)
	require.NoError(t, err)
	require.False(t, known)
	require.NoError(t, n.Joined(vm))
	known, err = n.Check(vm, testStart)
	require.NoError(t, err)
	require.True(t, known, "an identity that joined with a token is known")

	clk.SetTime(testStart.Add(time.Minute))
	_, err = n.Evict(node)
	require.NoError(t, err)
	_, err = n.Check(node, testStart)
	require.ErrorIs(t, err, ErrNodeEvicted)
	_, err = n.Check(node, testStart.Add(time.Minute).Truncate(time.Second))
	require.ErrorIs(t, err, ErrNodeEvicted, "an SVID from the eviction's own second is refused")
	require.NoError(t, n.Joined(node), "an evicted node joins again")
	_, err = n.Check(node, testStart.Add(2*time.Minute))
	require.NoError(t, err, "its new SVID is good")

	_, err = n.Ban(node)
	require.NoError(t, err)
	_, err = n.Check(node, testStart.Add(time.Hour))
	require.ErrorIs(t, err, ErrNodeBanned)
	require.ErrorIs(t, n.Joined(node), ErrNodeBanned)
	require.True(t, n.Banned(node))

	// A restart keeps evictions and bans.
	again, err := NewNodes(NodesConfig{TrustDomain: testTD, Clock: clk, Store: NodesFile(store)})
	require.NoError(t, err)
	require.True(t, again.Banned(node))
	require.Len(t, again.List(), 2)

	_, err = n.Evict(spiffeid.RequireFromString("spiffe://example.org/certmesh/server"))
	require.ErrorIs(t, err, ErrNotEvictable)
	_, err = n.Ban(spiffeid.RequireFromString("spiffe://other.org/certmesh/node/n1"))
	require.ErrorIs(t, err, ErrNotEvictable)
}

func TestNodesRefusesACorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodes.json")
	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
	_, err := NewNodes(NodesConfig{TrustDomain: testTD, Store: NodesFile(fileStore(path))})
	require.ErrorContains(t, err, "nodes: decode")
	require.NoError(t, os.WriteFile(path, []byte(`{"version":1,"nodes":[{"id":"spiffe://example.org/certmesh/node/x","state":"gone"}]}`), 0o600))
	_, err = NewNodes(NodesConfig{TrustDomain: testTD, Store: NodesFile(fileStore(path))})
	require.ErrorContains(t, err, "unknown state")
}
