//go:build cgo

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/pkcs11/pkcs11test"
)

// TestCAInitOnToken: `ca init --root-key-uri --intermediate-key-uri` writes
// no key file for either; an offline `ca rotate` and `ca inspect` open them
// from their URIs and the new root's keys go to the token as well.
func TestCAInitOnToken(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh")
	_ = tk.Provider.Close() // the commands load the module themselves
	dir := t.TempDir()
	var out bytes.Buffer
	keys := []string{"--root-key-uri", tk.URI, "--intermediate-key-uri", tk.URI}
	require.NoError(t, caInit(append([]string{"--dir", dir, "--trust-domain", "example.org"}, keys...), &out))
	require.NoError(t, caRotate(context.Background(), append([]string{"--dir", dir, "--root"}, keys...), &out))
	snap, err := ca.ReadSnapshot(caDir(dir))
	require.NoError(t, err)
	require.Len(t, snap.Roots, 2)
	for _, a := range snap.Roots {
		adir := filepath.Join(caDir(dir), "authorities", a.ID)
		for _, f := range []string{"root.key", "intermediate.key"} {
			require.NoFileExists(t, filepath.Join(adir, f))
			require.FileExists(t, filepath.Join(adir, f+".uri"))
		}
	}
	out.Reset()
	require.NoError(t, caInspect(context.Background(), []string{"--dir", dir}, &out))
	require.Contains(t, out.String(), "activate root at")

	err = caInit([]string{"--dir", t.TempDir(), "--trust-domain", "example.org", "--intermediate-key-uri", tk.URI + "x"}, &out)
	require.ErrorContains(t, err, "--intermediate-key-uri", "a wrong module fails at start")
}
