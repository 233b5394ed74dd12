package drills

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

// TestDrillServerCrash: a CA server is killed with SIGKILL while an agent
// (a separate process) serves workloads and workloads keep asking for their
// SVID; it restarts on the same directory and port. No workload is ever
// without a valid SVID, the restarted server is the same CA, and the agent
// renews from it by itself.
func TestDrillServerCrash(t *testing.T) {
	dir := harness.StateDir(t)
	regs := registrations(t)
	addr := freeAddr(t)
	serverArgs := []string{"server", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", addr, "--svid-ttl", "1m", "--max-ttl", "1m"}
	srv := start(t, 0, certmesh(t), serverArgs...)
	srv.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	bundleBefore := run(t, "ca", "bundle", "--dir", dir)
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	require.NoError(t, os.WriteFile(bundleFile, []byte(bundleBefore), 0o644))
	token := strings.TrimSpace(run(t, "token", "create", "--dir", dir, "--id", "spiffe://example.org/certmesh/node/drill", "--ttl", "1m"))
	socket := filepath.Join(dir, "agent.sock")
	agent := start(t, 0, certmesh(t), "agent", "--server", addr, "--socket", socket, "--join-token", token,
		"--trust-domain", "example.org", "--trust-bundle", bundleFile, "--registrations", regs, "--svid-ttl", "1m")
	agent.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	probe := startProbe(ctx, "unix://"+socket)
	time.Sleep(3 * time.Second)
	first := probe.serial()
	srv.Kill() // SIGKILL, mid-stream for the agent
	time.Sleep(10 * time.Second)
	srv2 := start(t, 0, certmesh(t), serverArgs...)
	srv2.WaitLine(t, "certmesh CA for example.org", 30*time.Second)
	require.Equal(t, bundleBefore, run(t, "ca", "bundle", "--dir", dir), "the restarted server is the same CA")
	harness.Poll{Timeout: 60 * time.Second, Every: 100 * time.Millisecond, Detail: agent.String}.WaitFor(t,
		"the agent to renew from the restarted server", func() bool { return probe.serial() != first })
	cancel()
	probe.wg.Wait()
	ops, gaps := probe.ops.Load(), probe.gaps.Load()
	record(row{Drill: "2. server crash", Injected: "SIGKILL of `certmesh server` with an agent streaming from it; restart after 10 s on the same dir and port",
		Ops: int(ops), Failed: int(gaps), MustBeZero: true, Worst: "-", PeakMem: peakRSS(agent.Pid()) + " (agent)",
		Notes: "probes: Workload API fetches every 10 ms, each must return an unexpired SVID; same CA after restart; agent renewed by itself. ACME order kill not drilled yet"})
	require.Zero(t, gaps, "moments without a valid SVID: %s", probe.firstErr.Load())
	require.Greater(t, ops, int64(100))
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(certmesh(t), args...).Output()
	require.NoError(t, err, "certmesh %v", args)
	return string(out)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// probe asks the agent for the SVID every 10 ms, as a workload starting up
// would, and counts the times it got none or an expired one.
type probe struct {
	ops, gaps atomic.Int64
	firstErr  atomic.Value
	last      atomic.Value
	wg        sync.WaitGroup
}

func startProbe(ctx context.Context, addr string) *probe {
	p := &probe{}
	p.last.Store("")
	p.firstErr.Store("")
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr(addr))
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.ops.Add(1)
			switch {
			case err != nil:
				p.fail(err.Error())
			case !time.Now().Before(svid.Certificates[0].NotAfter):
				p.fail("expired SVID served")
			default:
				p.last.Store(svid.Certificates[0].SerialNumber.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return p
}

func (p *probe) fail(msg string) {
	if p.gaps.Add(1) == 1 {
		p.firstErr.Store(fmt.Sprint(msg))
	}
}

func (p *probe) serial() string { return p.last.Load().(string) }
