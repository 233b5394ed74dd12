package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

// TestRegistrationsReloadWithoutRestart edits the registrations file of a
// running `certmesh dev`, as an operator would: a new workload is served
// within seconds, a removed one is refused, a broken edit changes nothing,
// and SIGHUP reloads (rather than ending the process).
func TestRegistrationsReloadWithoutRestart(t *testing.T) {
	t.Parallel()
	regs := registrations(t, harness.Workload{})
	d := startDevWith(t, harness.StateDir(t), regs)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fetch := func(uid int) (string, error) {
		out, err := runAs(ctx, t, uid, "-mode", "fetch", "-socket", d.socket).CombinedOutput()
		return string(out), err
	}
	out, err := fetch(uidNoReg)
	require.Error(t, err, out)
	out, err = fetch(uidWeb)
	require.NoError(t, err, out)

	edited := func(body string) string {
		return fmt.Sprintf("trustDomain: example.org\nworkloads:\n  - spiffeID: spiffe://example.org/test/runner\n    uid: %d\n%s", os.Getuid(), body)
	}
	replaceFile(t, regs, edited(fmt.Sprintf("  - spiffeID: spiffe://example.org/ns/default/sa/late\n    uid: %d\n", uidNoReg)))
	waitFetch(t, fetch, uidNoReg, "identity spiffe://example.org/ns/default/sa/late")
	out, err = fetch(uidWeb)
	require.Error(t, err, "web was removed from the file: %s", out)
	require.Contains(t, out, "PermissionDenied")

	// A broken edit: the registrations in force stay.
	replaceFile(t, regs, edited("  - spiffeID: spiffe://example.org/ns/default/sa/late\n    uid: [\n"))
	time.Sleep(3 * time.Second) // past one poll (2 s): nothing must change
	out, err = fetch(uidNoReg)
	require.NoError(t, err, out)
	require.Contains(t, out, "identity spiffe://example.org/ns/default/sa/late")
	status := func() string {
		out, err := exec.Command(certmesh(t), "status", "--dir", d.dir).CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	st := status()
	require.Contains(t, st, "registrations: "+regs+", 2 entries in force")
	require.Contains(t, st, "last edit NOT in force: identity: "+regs)

	// SIGHUP reloads at once and the process lives on.
	replaceFile(t, regs, edited(fmt.Sprintf("  - spiffeID: spiffe://example.org/ns/default/sa/web\n    uid: %d\n", uidWeb)))
	require.NoError(t, d.Signal(syscall.SIGHUP))
	waitFetch(t, fetch, uidWeb, "identity spiffe://example.org/ns/default/sa/web")
	require.NotContains(t, status(), "NOT in force")
	if d.Exited() {
		t.Fatalf("certmesh dev ended on SIGHUP: %v", d.Stop())
	}
}

func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".tmp", []byte(body), 0o644))
	require.NoError(t, os.Rename(path+".tmp", path))
}

// waitFetch retries a fetch as uid (bounded: 20 tries, 10 s) until it prints want.
func waitFetch(t *testing.T, fetch func(int) (string, error), uid int, want string) {
	t.Helper()
	var out string
	harness.Poll{Every: 500 * time.Millisecond, Tries: 20}.WaitFor(t, fmt.Sprintf("uid %d gets %q", uid, want), func() bool {
		var err error
		out, err = fetch(uid)
		return err == nil && strings.Contains(out, want)
	})
}
