package drills

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/store"
	"github.com/certmesh/certmesh/identity"
)

// smallDisk mounts a 512 KiB tmpfs (the drills run as root) and unmounts it
// at the end.
func smallDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, "the disk drill needs root to mount a tmpfs: %s", out)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := 0; i < 64; i++ { // at most 4 MiB, well past the disk's size
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			return p
		}
	}
	t.Fatal("the small disk never filled up")
	return ""
}

// TestDrillDiskTrouble: the state directory fills up, then turns read-only,
// while the CA rotates and join tokens are issued. Every failed write is a
// clear error, the old material stays intact and loadable, and once the
// disk is fixed the same operations succeed.
func TestDrillDiskTrouble(t *testing.T) {
	disk := smallDisk(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	cfg := ca.Config{Dir: filepath.Join(disk, "ca"), TrustDomain: td}
	c, err := ca.New(cfg)
	require.NoError(t, err)
	before := c.BundlePEM()
	tokens, err := identity.NewJoinTokens(identity.JoinTokensConfig{TrustDomain: td, Store: store.File{Path: filepath.Join(disk, "join-tokens.json")}})
	require.NoError(t, err)
	node := spiffeid.RequireFromString("spiffe://example.org/certmesh/node/a")
	_, _, err = tokens.Create(node, time.Minute)
	require.NoError(t, err)

	ops, failed := 0, 0
	check := func(what string, err error, want syscall.Errno) {
		ops++
		require.Error(t, err, what)
		require.ErrorIs(t, err, want, what)
		failed++
		again, lerr := ca.New(cfg)
		require.NoError(t, lerr, "the old CA material must still load after a failed %s", what)
		require.Equal(t, string(before), string(again.BundlePEM()), "the old bundle is intact after a failed %s", what)
	}

	filler := fill(t, disk)
	_, err = c.Rotate()
	check("rotation on a full disk", err, syscall.ENOSPC)
	_, _, err = tokens.Create(node, time.Minute)
	ops++
	require.ErrorIs(t, err, syscall.ENOSPC, "join token on a full disk")
	require.NoError(t, os.Remove(filler))

	out, err := exec.Command("mount", "-o", "remount,ro", disk).CombinedOutput()
	require.NoError(t, err, string(out))
	_, err = c.Rotate()
	check("rotation on a read-only disk", err, syscall.EROFS)
	out, err = exec.Command("mount", "-o", "remount,rw", disk).CombinedOutput()
	require.NoError(t, err, string(out))

	_, err = c.Rotate()
	ops++
	require.NoError(t, err, "the disk is fixed: rotation works again without a restart")
	_, _, err = tokens.Create(node, time.Minute)
	ops++
	require.NoError(t, err)
	leftovers, _ := filepath.Glob(filepath.Join(disk, "ca", "*tmp*"))
	record(row{Drill: "4. disk trouble", Injected: "state dir full (ENOSPC), then read-only (EROFS), during CA rotation and join-token writes",
		Ops: ops, Failed: failed, Worst: "-", PeakMem: "-",
		Notes: "each failure is a clear error naming the file; old CA loads unchanged after each; writes succeed once fixed; no temp files left"})
	require.Empty(t, leftovers)
}
