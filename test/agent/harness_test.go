// Package agent_test runs `certmesh dev` as a real process and talks to it
// with real clients: go-spiffe's workloadapi, spiffetls between two uids,
// openssl, and an Envoy-like SDS client.
package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var bin struct{ certmesh, workload string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "certmesh-bin-")
	if err != nil {
		panic(err)
	}
	bin.certmesh = filepath.Join(dir, "certmesh")
	bin.workload = filepath.Join(dir, "workload")
	for out, pkg := range map[string]string{bin.certmesh: "../../cmd/certmesh", bin.workload: "./workload"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	_ = os.Chmod(dir, 0o755)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Uids of the test workloads; the test runs as root to start them.
const (
	uidWeb   = 4001
	uidDB    = 4002
	uidNoReg = 4003
)

func registrations(t testing.TB, runnerExtra ...string) string {
	t.Helper()
	extra := ""
	for _, l := range runnerExtra {
		extra += "\n    " + l
	}
	p := filepath.Join(t.TempDir(), "regs.yaml")
	require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(`trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/test/runner
    uid: %d%s
  - spiffeID: spiffe://example.org/ns/default/sa/web
    uid: %d
    dnsNames: [web.default.svc]
  - spiffeID: spiffe://example.org/ns/default/sa/db
    uid: %d
`, os.Getuid(), extra, uidWeb, uidDB)), 0o644))
	return p
}

// dev is a running `certmesh dev`.
type dev struct {
	cmd    *exec.Cmd
	dir    string
	socket string // unix://...
	done   chan error
	stderr *strings.Builder
}

// stateDir is a directory other uids can traverse, so they reach the socket.
func stateDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "certmesh-dev-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(d, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func startDev(t testing.TB, dir string, extra ...string) *dev {
	t.Helper()
	return startDevWith(t, dir, registrations(t), extra...)
}

func startDevWith(t testing.TB, dir, regs string, extra ...string) *dev {
	t.Helper()
	args := append([]string{"dev", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(bin.certmesh, args...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	d := &dev{cmd: cmd, dir: dir, done: make(chan error, 1), stderr: &strings.Builder{}}
	cmd.Stderr = d.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	require.NoError(t, cmd.Start())
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	timeout := time.After(20 * time.Second)
	for d.socket == "" {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "certmesh dev exited early: %s", d.stderr)
			if v, found := strings.CutPrefix(l, "SPIFFE_ENDPOINT_SOCKET="); found {
				d.socket = v
			}
		case <-timeout:
			t.Fatalf("certmesh dev printed no SPIFFE_ENDPOINT_SOCKET within 20s: %s", d.stderr)
		}
	}
	return d
}

// stop sends SIGINT (Ctrl-C) and expects a clean exit.
func (d *dev) stop(t testing.TB) {
	if d.cmd.ProcessState != nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		require.NoError(t, err, "certmesh dev should exit 0 on Ctrl-C: %s", d.stderr)
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Fatal("certmesh dev did not stop within 15s of SIGINT")
	}
}

// runAs runs the test workload program as uid.
func runAs(ctx context.Context, uid uint32, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin.workload, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}, Pdeathsig: syscall.SIGKILL}
	return cmd
}
