package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
)

// TestOneRegistrationsFileForTwoNodes runs `certmesh server` and two `certmesh
// agent` processes (nodes n1 and n2, joined with their own tokens) from one
// registrations file in which this process's uid is a different workload on
// each node. A go-spiffe client on each node's socket gets that node's
// workload; neither agent asks for the other node's (the server would refuse
// it: see ca/service's TestNodeScopedRegistration), and an entry without
// nodes is served on both.
func TestOneRegistrationsFileForTwoNodes(t *testing.T) {
	dir := stateDir(t)
	regs := filepath.Join(t.TempDir(), "regs.yaml")
	require.NoError(t, os.WriteFile(regs, []byte(fmt.Sprintf(`trustDomain: example.org
workloads:
  - spiffeID: spiffe://example.org/n1/runner
    uid: %[1]d
    nodes: [spiffe://example.org/certmesh/node/n1]
  - spiffeID: spiffe://example.org/n2/runner
    uid: %[1]d
    nodes: [spiffe://example.org/certmesh/node/n2]
  - spiffeID: spiffe://example.org/ns/default/sa/web
    uid: %[2]d
`, os.Getuid(), uidWeb)), 0o644))
	addr := "127.0.0.1:" + freePort(t)
	srv := startProc(t, "server", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", addr)
	srv.waitLine(t, "certmesh CA for example.org")
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	out, err := exec.Command(bin.certmesh, "ca", "bundle", "--dir", dir).Output()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bundle, out, 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, node := range []string{"n1", "n2"} {
		token, err := exec.Command(bin.certmesh, "token", "create", "--dir", dir, "--id", "spiffe://example.org/certmesh/node/"+node, "--ttl", "1m").Output()
		require.NoError(t, err)
		socket := filepath.Join(dir, node+".sock")
		agent := startProc(t, "agent", "--server", addr, "--socket", socket, "--join-token", strings.TrimSpace(string(token)),
			"--trust-domain", "example.org", "--trust-bundle", bundle, "--registrations", regs)
		agent.waitLine(t, "SPIFFE_ENDPOINT_SOCKET=")

		client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
		require.NoError(t, err)
		svid, err := client.FetchX509SVID(ctx)
		require.NoError(t, err, "node %s: %s", node, agent.stderr)
		require.Equal(t, spiffeid.RequireFromString("spiffe://example.org/"+node+"/runner"), svid.ID, "the same uid is %s's own workload", node)
		require.NoError(t, client.Close())
		require.NotContains(t, agent.stderr.String(), "PermissionDenied", "the agent asked for nothing the server refuses")
		require.Contains(t, agent.stderr.String(), "workload registered for other nodes; not kept here")
	}
	// The unscoped entry is served on both nodes: web's uid runs the workload program.
	for _, node := range []string{"n1", "n2"} {
		out, err := runAs(ctx, uidWeb, "-mode", "fetch", "-socket", "unix://"+filepath.Join(dir, node+".sock")).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "identity spiffe://example.org/ns/default/sa/web")
	}
}

// proc is a certmesh process whose stdout lines are watched and whose
// stderr is kept for failure messages; it is killed when the test ends.
type proc struct {
	lines  chan string
	stderr *syncBuffer
}

// syncBuffer is a strings.Builder the process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin.certmesh, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &proc{lines: make(chan string, 64), stderr: &syncBuffer{}}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			select {
			case p.lines <- s.Text():
			default: // nobody is waiting for more lines
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
	})
	return p
}

func (p *proc) waitLine(t *testing.T, prefix string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.HasPrefix(l, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("no line starting %q within 30s: %s", prefix, p.stderr)
		}
	}
}
