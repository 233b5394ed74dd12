package identity_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/identity"
)

func TestDownstreamTrustDomain(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want string
	}{
		{name: "a cluster", id: "spiffe://example.org/certmesh/downstream/cluster2", want: "cluster2.example.org"},
		{name: "two labels", id: "spiffe://example.org/certmesh/downstream/a.cluster2"},
		{name: "a path", id: "spiffe://example.org/certmesh/downstream/a/b"},
		{name: "not a label", id: "spiffe://example.org/certmesh/downstream/-bad"},
		{name: "a node", id: "spiffe://example.org/certmesh/node/n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td, err := identity.DownstreamTrustDomain(spiffeid.RequireFromString(tt.id))
			if tt.want == "" {
				require.ErrorIs(t, err, identity.ErrDownstreamName)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, td.Name())
		})
	}
}

func TestJoinTokenForDownstream(t *testing.T) {
	j, err := identity.NewJoinTokens(identity.JoinTokensConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	require.NoError(t, err)
	_, _, err = j.Create(spiffeid.RequireFromString("spiffe://example.org/certmesh/downstream/cluster2"), time.Hour)
	require.NoError(t, err)
	_, _, err = j.Create(spiffeid.RequireFromString("spiffe://example.org/certmesh/server"), time.Hour)
	require.ErrorIs(t, err, identity.ErrReservedID)
}

func TestDownstreamEvictable(t *testing.T) {
	n, err := identity.NewNodes(identity.NodesConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	require.NoError(t, err)
	id := spiffeid.RequireFromString("spiffe://example.org/certmesh/downstream/cluster2")
	require.NoError(t, n.Joined(id))
	_, err = n.Evict(id)
	require.NoError(t, err)
	_, err = n.Check(id, time.Now().Add(-time.Hour))
	require.ErrorIs(t, err, identity.ErrNodeEvicted)
}
