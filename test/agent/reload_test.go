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
)

// TestRegistrationsReloadWithoutRestart edits the registrations file of a
// running `certmesh dev`, as an operator would: a new workload is served
// within seconds, a removed one is refused, a broken edit changes nothing,
// and SIGHUP reloads (rather than ending the process).
func TestRegistrationsReloadWithoutRestart(t *testing.T) {
	regs := registrations(t)
	d := startDevWith(t, stateDir(t), regs)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fetch := func(uid uint32) (string, error) {
		out, err := runAs(ctx, uid, "-mode", "fetch", "-socket", d.socket).CombinedOutput()
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
		out, err := exec.Command(bin.certmesh, "status", "--dir", d.dir).CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	st := status()
	require.Contains(t, st, "registrations: "+regs+", 2 entries in force")
	require.Contains(t, st, "last edit NOT in force: identity: "+regs)

	// SIGHUP reloads at once and the process lives on.
	replaceFile(t, regs, edited(fmt.Sprintf("  - spiffeID: spiffe://example.org/ns/default/sa/web\n    uid: %d\n", uidWeb)))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	waitFetch(t, fetch, uidWeb, "identity spiffe://example.org/ns/default/sa/web")
	require.NotContains(t, status(), "NOT in force")
	select {
	case err := <-d.done:
		d.done <- err
		t.Fatalf("certmesh dev ended on SIGHUP: %v", err)
	default:
	}
}

func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".tmp", []byte(body), 0o644))
	require.NoError(t, os.Rename(path+".tmp", path))
}

// waitFetch retries a fetch as uid (bounded: 20 tries, 10 s) until it prints want.
func waitFetch(t *testing.T, fetch func(uint32) (string, error), uid uint32, want string) {
	t.Helper()
	var out string
	for range 20 {
		var err error
		if out, err = fetch(uid); err == nil && strings.Contains(out, want) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("uid %d never got %q; last: %s", uid, want, out)
}
