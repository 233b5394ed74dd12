package store_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca/store"
)

func TestWriteFileAtomicAndPrivate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.key")
	require.NoError(t, store.WriteFile(p, []byte("one"), 0o600))
	require.NoError(t, store.WriteFile(p, []byte("two"), 0o600))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "two", string(b))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
}

func TestWriteFileFailureKeepsOldContent(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores directory permissions; use a missing directory instead.
		err := store.WriteFile(filepath.Join(t.TempDir(), "missing", "k"), []byte("x"), 0o600)
		require.Error(t, err)
		return
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	require.NoError(t, store.WriteFile(p, []byte("old"), 0o600))
	require.NoError(t, os.Chmod(dir, 0o500))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	require.Error(t, store.WriteFile(p, []byte("new"), 0o600))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "old", string(b))
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("old"), 0o644))
	require.NoError(t, store.WriteFiles(dir,
		store.Entry{Name: "tls.key", Data: []byte("key"), Perm: 0o600},
		store.Entry{Name: "tls.crt", Data: []byte("cert"), Perm: 0o644},
	))
	for _, tc := range []struct {
		name string
		want string
		perm os.FileMode
	}{
		{name: "tls.key", want: "key", perm: 0o600},
		{name: "tls.crt", want: "cert", perm: 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, tc.want, string(b))
			fi, err := os.Stat(p)
			require.NoError(t, err)
			require.Equal(t, tc.perm, fi.Mode().Perm())
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary file left behind")
}

func TestWriteFilesStopsAtFirstFailure(t *testing.T) {
	dir := t.TempDir()
	err := store.WriteFiles(dir,
		store.Entry{Name: "a", Data: []byte("a"), Perm: 0o600},
		store.Entry{Name: filepath.Join("missing", "b"), Data: []byte("b"), Perm: 0o600},
		store.Entry{Name: "c", Data: []byte("c"), Perm: 0o600},
	)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(filepath.Join(dir, "a"))
	require.NoError(t, err, "entries before the failure are written")
	_, err = os.Stat(filepath.Join(dir, "c"))
	require.ErrorIs(t, err, fs.ErrNotExist, "entries after it are not")
}

func TestLockDirRefusesSecondHolder(t *testing.T) {
	dir := t.TempDir()
	l, err := store.LockDir(dir)
	require.NoError(t, err)
	_, err = store.LockDir(dir)
	require.ErrorIs(t, err, store.ErrLocked)
	require.NoError(t, l.Unlock())
	l2, err := store.LockDir(dir)
	require.NoError(t, err, "lock is free again after unlock")
	require.NoError(t, l2.Unlock())
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	_, err := store.ListenUnix(file, 0o600)
	require.ErrorIs(t, err, store.ErrNotSocket)
	b, _ := os.ReadFile(file)
	require.Equal(t, "x", string(b), "a regular file is never removed")

	sock := filepath.Join(dir, "s.sock")
	lis, err := store.ListenUnix(sock, 0o666)
	require.NoError(t, err)
	_, err = store.ListenUnix(sock, 0o666)
	require.True(t, errors.Is(err, store.ErrSocketBusy), "%v", err)
	require.NoError(t, lis.Close())
}
