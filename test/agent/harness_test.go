// Package agent_test runs `certmesh dev` as a real process and talks to it
// with real clients: go-spiffe's workloadapi, spiffetls between two uids,
// openssl, and an Envoy-like SDS client.
package agent_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

const workloadPkg = "github.com/certmesh/certmesh/test/agent/workload"

func TestMain(m *testing.M) { os.Exit(harness.Main(m, harness.CertmeshPkg, workloadPkg)) }

// Uids of the test workloads; the test runs as root to start them.
const (
	uidWeb   = 4001
	uidDB    = 4002
	uidNoReg = 4003
)

// certmesh is the certmesh binary.
func certmesh(t testing.TB) string { return harness.Binary(t) }

// registrations writes the suite's registrations: this process's uid is the
// runner (with extra, e.g. edge certificates), and web and db.
func registrations(t testing.TB, runner harness.Workload) string {
	t.Helper()
	runner.ID, runner.UID = "spiffe://example.org/test/runner", os.Getuid()
	return harness.Registrations(t, "example.org", runner,
		harness.Workload{ID: "spiffe://example.org/ns/default/sa/web", UID: uidWeb, DNSNames: []string{"web.default.svc"}},
		harness.Workload{ID: "spiffe://example.org/ns/default/sa/db", UID: uidDB})
}

// dev is a running `certmesh dev`.
type dev struct {
	*harness.Proc
	dir    string
	socket string // unix://...
}

func startDev(t testing.TB, dir string, extra ...string) *dev {
	t.Helper()
	return startDevWith(t, dir, registrations(t, harness.Workload{}), extra...)
}

func startDevWith(t testing.TB, dir, regs string, extra ...string) *dev {
	t.Helper()
	args := append([]string{"dev", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", "127.0.0.1:0"}, extra...)
	d := &dev{dir: dir, Proc: harness.Start(t, harness.Spec{Name: "certmesh dev", Path: certmesh(t), Args: args, StopGrace: 15 * time.Second})}
	t.Cleanup(func() {
		if !d.Exited() {
			d.stop(t)
		}
	})
	d.socket = d.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 20*time.Second)
	return d
}

// stop sends SIGINT (Ctrl-C) and expects a clean exit.
func (d *dev) stop(t testing.TB) {
	t.Helper()
	require.NoError(t, d.Stop(), "certmesh dev should exit 0 on Ctrl-C: %s", d.Stderr())
}

// runAs runs the test workload program as uid.
func runAs(ctx context.Context, t testing.TB, uid int, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, harness.Build(t, workloadPkg), args...)
	cmd.SysProcAttr = harness.SysProcAttr(uid)
	return cmd
}
