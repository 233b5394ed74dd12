package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool finds a test tool in the tools cache that test/tools/install.sh
// fills ($CERTMESH_TOOLS, default ~/.cache/certmesh/bin) or on PATH, or
// fails naming the script that installs it.
func Tool(t testing.TB, name, script string) string {
	t.Helper()
	dir := os.Getenv("CERTMESH_TOOLS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "certmesh", "bin")
	}
	if p := filepath.Join(dir, name); FileExists(p) {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("harness: %s not found in %s or PATH: run %s first", name, dir, script)
	}
	return p
}

// FileExists reports whether p is a regular file (or at least not a
// directory) that can be stat'ed.
func FileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
