package drills

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

type summary struct {
	Ops        int    `json:"ops"`
	Failures   int    `json:"failures"`
	WorstMs    int64  `json:"worstMs"`
	FirstError string `json:"firstError"`
	Issuers    int    `json:"issuersSeen"`
}

// TestDrillRootRotationUnderTraffic: two workloads (different uids) keep one
// mTLS connection and open a new one every 5 ms while `certmesh ca rotate`
// runs through its phases. Short: through the switch and the workloads'
// move to SVIDs of the new root. Full: until the old root is retired.
func TestDrillRootRotationUnderTraffic(t *testing.T) {
	dir := harness.StateDir(t)
	dev := start(t, 0, certmesh(t), "dev", "--dir", dir, "--trust-domain", "example.org", "--registrations", registrations(t),
		"--listen", "127.0.0.1:0", "--rotation-overlap", "3s", "--svid-ttl", "1m", "--max-ttl", "1m")
	socket := dev.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
	backend := start(t, uidBackend, handshaker(t), "-mode", "serve", "-socket", socket, "-peer", gatewayID)
	addr := backend.WaitLine(t, "listening ", 30*time.Second)

	duration := 45 * time.Second
	if *full {
		duration = 8 * time.Minute
	}
	gateway := start(t, uidGateway, handshaker(t), "-mode", "dial", "-socket", socket, "-addr", addr, "-peer", backendID,
		"-duration", duration.String(), "-every", "5ms")
	time.Sleep(3 * time.Second)
	out, err := exec.Command(certmesh(t), "ca", "rotate", "--dir", dir).CombinedOutput()
	require.NoError(t, err, string(out))
	t0 := time.Now()
	waitPhase(t, dir, "retiring", 60*time.Second)
	t.Logf("switched %v after rotate", time.Since(t0))
	if *full {
		waitPhase(t, dir, "steady", 8*time.Minute)
	}

	var s summary
	line := gateway.WaitLine(t, "{", duration+time.Minute)
	require.NoError(t, json.Unmarshal([]byte("{"+line), &s))
	peak := peakRSS(dev.Pid())
	record(row{Drill: "1. root rotation under traffic", Injected: "`certmesh ca rotate` (overlap 3s, SVID TTL 1m) during mTLS every 5 ms + a held connection",
		Ops: s.Ops, Failed: s.Failures, MustBeZero: true, Worst: fmt.Sprintf("%d ms", s.WorstMs), PeakMem: peak,
		Notes: fmt.Sprintf("workload SVIDs from %d intermediates used", s.Issuers)})
	require.Zero(t, s.Failures, "failed handshakes during rotation; first: %s", s.FirstError)
	require.Greater(t, s.Ops, 1000)
	require.GreaterOrEqual(t, s.Issuers, 2, "the workloads must have moved to an SVID under the new root")
}

// waitPhase polls `certmesh ca inspect -o json` until the rotation phase is want.
func waitPhase(t *testing.T, dir, want string, limit time.Duration) {
	t.Helper()
	var phase string
	harness.Poll{Timeout: limit, Every: 200 * time.Millisecond, Detail: func() string { return "last phase: " + phase }}.WaitFor(t,
		fmt.Sprintf("rotation phase %q", want), func() bool {
			out, err := exec.Command(certmesh(t), "ca", "inspect", "--dir", dir, "-o", "json").Output()
			require.NoError(t, err)
			var st struct {
				Phase string `json:"phase"`
			}
			require.NoError(t, json.Unmarshal(out, &st))
			phase = st.Phase
			return phase == want
		})
}

// peakRSS reads a process's peak resident memory (VmHWM).
func peakRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return fmt.Sprintf("%d MiB", kb/1024)
		}
	}
	return "?"
}
