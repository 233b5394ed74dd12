package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// tmpDir makes a directory of mode perm directly under the system's temp
// directory (t.TempDir's own parents are 0700, which would block the walk).
func tmpDir(t *testing.T, perm os.FileMode) string {
	t.Helper()
	d := filepath.Join(os.TempDir(), filepath.Base(t.TempDir())+"-"+perm.String())
	require.NoError(t, os.Mkdir(d, perm))
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func TestMakeSearchable(t *testing.T) {
	dir := filepath.Join(tmpDir(t, 0o755), "state")
	require.NoError(t, os.Mkdir(dir, 0o700))
	sock := filepath.Join(dir, "agent.sock")
	require.Equal(t, dir, Unsearchable(sock))

	require.NoError(t, MakeSearchable(dir))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o711), fi.Mode().Perm(), "search bits only, no read")
	require.Empty(t, Unsearchable(sock))

	closed := tmpDir(t, 0o700)
	require.Equal(t, closed, Unsearchable(filepath.Join(closed, "state", "agent.sock")), "the first directory that blocks is named")
}
