package ca

import (
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// TestRestore: a CA that restores another's files signs and publishes as
// that CA, fires BundleChanged, and drops its own authority.
func TestRestore(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a, err := New(Config{Dir: filepath.Join(t.TempDir(), "a"), TrustDomain: td})
	require.NoError(t, err)
	_, err = a.Rotate()
	require.NoError(t, err)
	b, err := New(Config{Dir: filepath.Join(t.TempDir(), "b"), TrustDomain: td})
	require.NoError(t, err)
	ownID := b.Status().Authorities[0].ID

	files, err := a.ExportFiles()
	require.NoError(t, err)
	require.Contains(t, files, "state.json")
	for _, st := range a.Status().State {
		require.Contains(t, files, "authorities/"+st.ID+"/jwt.key", "each authority has its JWT key")
	}
	require.NotContains(t, files, "jwt.key")
	changed := b.BundleChanged()
	require.NoError(t, b.Restore(files))
	select {
	case <-changed:
	default:
		t.Fatal("BundleChanged did not fire")
	}
	require.Equal(t, a.BundlePEM(), b.BundlePEM())
	require.Equal(t, a.JWTBundle().JWTAuthorities(), b.JWTBundle().JWTAuthorities())
	require.Len(t, b.Status().State, 2)
	for i, st := range a.Status().State {
		require.Equal(t, st.ID, b.Status().State[i].ID)
		require.Equal(t, st.Phase, b.Status().State[i].Phase)
		require.True(t, st.ActivateAt.Equal(b.Status().State[i].ActivateAt))
	}
	require.NoDirExists(t, filepath.Join(b.cfg.Dir, authoritiesPath, ownID))

	got, err := b.ExportFiles()
	require.NoError(t, err)
	require.Equal(t, files, got, "export after restore is the same set")

	reopened, err := New(Config{Dir: b.cfg.Dir, TrustDomain: td})
	require.NoError(t, err)
	require.Equal(t, a.BundlePEM(), reopened.BundlePEM())
}

func TestWriteFilesRefusesForeignPaths(t *testing.T) {
	for _, p := range []string{"../x", "authorities/a/evil.sh", "authorities/../../x/root.crt", "other.json", "authorities/.tmp/root.crt"} {
		err := WriteFiles(t.TempDir(), Files{p: []byte("x")})
		require.ErrorIs(t, err, ErrBadFiles, p)
	}
}
