package sds

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/identity"
)

// TestTokenFile: the file is read at every use, so a token the kubelet
// rotated is the one sent; a missing file is not a usable credential.
func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	f := TokenFile{Path: path}
	_, ok := f.Token()
	require.False(t, ok)
	require.NoError(t, os.WriteFile(path, []byte("first\n"), 0o600))
	tok, ok := f.Token()
	require.True(t, ok)
	require.Equal(t, "first", tok)
	require.NoError(t, os.WriteFile(path, []byte("second"), 0o600))
	tok, ok = f.Token()
	require.True(t, ok)
	require.Equal(t, "second", tok, "never a cached copy")
	require.True(t, presentsCredentialEachTime(f))
	require.False(t, presentsCredentialEachTime(NewJoinToken("x")))
}

func TestPodAttestorBeforeIdentity(t *testing.T) {
	a := &Agent{}
	_, err := PodAttestor{Agent: a}.Attest(context.Background(), identity.Credential{Peer: &identity.PeerCred{UID: 1}})
	require.ErrorIs(t, err, ErrNoOwnIdentity)
	_, err = PodAttestor{Agent: a}.Attest(context.Background(), identity.Credential{BearerToken: "x"})
	require.ErrorIs(t, err, identity.ErrNotApplicable)
}

func TestPodAttestorGrantsTheGatewaysEdgeSecrets(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/gateway")
	a := &Agent{own: &x509svid.SVID{ID: id}}
	got, err := PodAttestor{Agent: a, EdgeCertificates: []string{"shop/shop-tls"}}.Attest(context.Background(),
		identity.Credential{Peer: &identity.PeerCred{UID: 1337}})
	require.NoError(t, err)
	require.Equal(t, id, got.ID)
	require.Equal(t, []string{"shop/shop-tls"}, got.EdgeCertificates, "SDS serves the gateway its edge Secrets")
}
