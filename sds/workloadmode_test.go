package sds

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
