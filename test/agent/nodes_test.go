package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

// TestOneRegistrationsFileForTwoNodes runs `certmesh server` and two `certmesh
// agent` processes (nodes n1 and n2, joined with their own tokens) from one
// registrations file in which this process's uid is a different workload on
// each node. A go-spiffe client on each node's socket gets that node's
// workload; neither agent asks for the other node's (the server would refuse
// it: see ca/service's TestNodeScopedRegistration), and an entry for every
// node (nodes: ["*"]) is served on both. n1 joins with --join-token-file,
// which keeps its token out of the process list; n2 with --join-token,
// which warns that it does not.
func TestOneRegistrationsFileForTwoNodes(t *testing.T) {
	dir := harness.StateDir(t)
	regs := harness.Registrations(t, "example.org",
		harness.Workload{ID: "spiffe://example.org/n1/runner", UID: os.Getuid(), Nodes: []string{"spiffe://example.org/certmesh/node/n1"}},
		harness.Workload{ID: "spiffe://example.org/n2/runner", UID: os.Getuid(), Nodes: []string{"spiffe://example.org/certmesh/node/n2"}},
		harness.Workload{ID: "spiffe://example.org/ns/default/sa/web", UID: uidWeb, Nodes: []string{"*"}})
	addr := "127.0.0.1:" + freePort(t)
	srv := startProc(t, "server", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", addr)
	srv.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	out, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", dir).Output()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bundle, out, 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sockets := map[string]string{}
	for _, node := range []string{"n1", "n2"} {
		out, err := exec.Command(certmesh(t), "token", "create", "--dir", dir, "--id", "spiffe://example.org/certmesh/node/"+node, "--ttl", "1m").Output()
		require.NoError(t, err)
		token := strings.TrimSpace(string(out))
		socket := harness.SocketPath(t, node+".sock")
		sockets[node] = socket
		// n1 reads its token from a file, n2 takes it on the command line.
		tokenArgs := []string{"--join-token", token}
		if node == "n1" {
			tokenFile := filepath.Join(t.TempDir(), "join-token")
			require.NoError(t, os.WriteFile(tokenFile, out, 0o600))
			tokenArgs = []string{"--join-token-file", tokenFile}
		}
		agent := startProc(t, append(append([]string{"agent", "--server", addr, "--socket", socket}, tokenArgs...),
			"--trust-domain", "example.org", "--trust-bundle", bundle, "--registrations", regs)...)
		agent.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", agent.Pid()))
		require.NoError(t, err)
		if node == "n1" {
			require.NotContains(t, string(cmdline), token, "a token from --join-token-file is not in the process list")
			require.NotContains(t, agent.Stderr(), "visible to every local user")
		} else {
			require.Contains(t, agent.Stderr(), "--join-token is visible to every local user", "--join-token warns")
		}

		client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
		require.NoError(t, err)
		svid, err := client.FetchX509SVID(ctx)
		require.NoError(t, err, "node %s: %s", node, agent.Stderr())
		require.Equal(t, spiffeid.RequireFromString("spiffe://example.org/"+node+"/runner"), svid.ID, "the same uid is %s's own workload", node)
		require.NoError(t, client.Close())
		require.NotContains(t, agent.Stderr(), "PermissionDenied", "the agent asked for nothing the server refuses")
		require.Contains(t, agent.Stderr(), "workload registered for other nodes; not kept here")
	}
	// The entry for every node is served on both nodes: web's uid runs the workload program.
	for _, node := range []string{"n1", "n2"} {
		out, err := runAs(ctx, t, uidWeb, "-mode", "fetch", "-socket", "unix://"+sockets[node]).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "identity spiffe://example.org/ns/default/sa/web")
	}
}

// startProc starts certmesh with args; it is stopped when the test ends.
func startProc(t *testing.T, args ...string) *harness.Proc {
	t.Helper()
	return harness.Start(t, harness.Spec{Name: "certmesh " + args[0], Path: certmesh(t), Args: args})
}
