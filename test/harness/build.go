// Package harness is what the integration suites under test/ share: the
// certmesh binary (and the suites' helper programs) built once per test
// binary, processes started and stopped with their output kept, state
// directories, registrations files, and one bounded wait.
//
// A suite's TestMain runs the tests through Main, which builds the programs
// the suite needs before the first test (so that no test's deadline pays
// for a build) and removes them at the end:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m, harness.CertmeshPkg)) }
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// CertmeshPkg is the import path of the certmesh command.
const CertmeshPkg = "github.com/certmesh/certmesh/cmd/certmesh"

var bins struct {
	mu     sync.Mutex
	dir    string
	dirErr error
	built  map[string]*built
}

type built struct {
	once sync.Once
	path string
	err  error
}

// BinaryEnv names a certmesh binary to use instead of building one (e.g. an
// older build, to show a suite fails on it); empty: build from the tree.
const BinaryEnv = "CERTMESH_BIN"

// Binary is the certmesh binary, built on first use and shared by every
// test of the test binary, or the one $CERTMESH_BIN names.
func Binary(t testing.TB) string {
	t.Helper()
	return Build(t, CertmeshPkg)
}

// Build builds the main package pkg (an import path in the certmesh module)
// once per test binary and returns the program's path. The directory it is
// built into is readable by every uid, so the suites can run it as their
// test workloads.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	p, err := build(pkg)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return p
}

func build(pkg string) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" && pkg == CertmeshPkg {
		return p, nil
	}
	b, dir, err := buildEntry(pkg)
	if err != nil {
		return "", err
	}
	b.once.Do(func() {
		out := filepath.Join(dir, path.Base(pkg))
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = moduleRoot() // so that a compiled test binary (go test -c) works from anywhere
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
			return
		}
		b.path = out
	})
	return b.path, b.err
}

func buildEntry(pkg string) (*built, string, error) {
	bins.mu.Lock()
	defer bins.mu.Unlock()
	if bins.dir == "" && bins.dirErr == nil {
		bins.dir, bins.dirErr = os.MkdirTemp("", "certmesh-test-bin-")
		if bins.dirErr == nil {
			bins.dirErr = os.Chmod(bins.dir, 0o755)
		}
	}
	if bins.dirErr != nil {
		return nil, "", fmt.Errorf("binaries directory: %w", bins.dirErr)
	}
	if bins.built == nil {
		bins.built = map[string]*built{}
	}
	b, ok := bins.built[pkg]
	if !ok {
		b = &built{}
		bins.built[pkg] = b
	}
	return b, bins.dir, nil
}

// BinDir is the directory the binaries are built into: readable by every
// uid, removed by Cleanup. A suite may put other programs there that its
// workloads, running as other uids, must execute.
func BinDir(t testing.TB) string {
	t.Helper()
	_, dir, err := buildEntry(CertmeshPkg)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return dir
}

// Main builds pkgs, runs the tests and removes the binaries; it returns the
// exit code for os.Exit.
func Main(m *testing.M, pkgs ...string) int {
	for _, pkg := range pkgs {
		if _, err := build(pkg); err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			return Cleanup(1)
		}
	}
	return Cleanup(m.Run())
}

// Cleanup removes the built binaries and returns code, for a TestMain that
// cannot use Main.
func Cleanup(code int) int {
	bins.mu.Lock()
	defer bins.mu.Unlock()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	return code
}

// moduleRoot is the certmesh module's directory, from this file's path.
func moduleRoot() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..")
}
