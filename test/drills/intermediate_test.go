package drills

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/test/harness"
)

// TestDrillIntermediateRenewal: `certmesh dev --ca-ttl 3m` with 1m SVIDs
// renews its intermediate on its own at half life (90 s); two workloads keep
// handshaking through Workload API sources the whole time. Nothing may fail,
// the workloads must end up on SVIDs of a second intermediate, and the
// trust bundle must not change. Full mode only: the shortest CA TTL the
// flags allow (2 × the 1m minimum SVID TTL) still needs ~2 minutes.
func TestDrillIntermediateRenewal(t *testing.T) {
	if !*full {
		t.Skip("takes 2.5 minutes; runs with -drill.full (make drill)")
	}
	dir := harness.StateDir(t)
	dev := start(t, 0, certmesh(t), "dev", "--dir", dir, "--trust-domain", "example.org", "--registrations", registrations(t),
		"--listen", "127.0.0.1:0", "--svid-ttl", "1m", "--max-ttl", "1m", "--ca-ttl", "3m")
	socket := dev.WaitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 30*time.Second)
	bundle := caBundle(t, dir)
	firstEnd := inspect(t, dir).Authorities[0].IntermediateNotAfter
	backend := start(t, uidBackend, handshaker(t), "-mode", "serve", "-socket", socket, "-peer", gatewayID)
	addr := backend.WaitLine(t, "listening ", 30*time.Second)
	duration := 150 * time.Second
	gateway := start(t, uidGateway, handshaker(t), "-mode", "dial", "-socket", socket, "-addr", addr, "-peer", backendID,
		"-duration", duration.String(), "-every", "20ms")

	var s summary
	line := gateway.WaitLine(t, "{", duration+time.Minute)
	require.NoError(t, json.Unmarshal([]byte("{"+line), &s))
	st := inspect(t, dir)
	record(row{Drill: "8. automatic intermediate renewal", Injected: "`--ca-ttl 3m`, SVID TTL 1m: the CA renews its intermediate at half life, no operator",
		Ops: s.Ops, Failed: s.Failures, MustBeZero: true, Worst: fmt.Sprintf("%d ms", s.WorstMs), PeakMem: peakRSS(dev.Pid()),
		Notes: fmt.Sprintf("workload SVIDs from %d intermediates used; trust bundle unchanged", s.Issuers)})
	require.Zero(t, s.Failures, "failed handshakes during renewal; first: %s", s.FirstError)
	require.Greater(t, s.Ops, 1000)
	require.GreaterOrEqual(t, s.Issuers, 2, "the workloads must have moved to an SVID of the new intermediate")
	require.Len(t, st.Authorities, 1, "same root: no new authority")
	require.True(t, st.Authorities[0].IntermediateNotAfter.After(firstEnd), "the intermediate was renewed")
	require.Equal(t, bundle, caBundle(t, dir), "the roots never changed")
}

type inspected struct {
	Authorities []struct {
		ID                   string    `json:"id"`
		IntermediateNotAfter time.Time `json:"intermediateNotAfter"`
	} `json:"authorities"`
}

func inspect(t *testing.T, dir string) inspected {
	t.Helper()
	out, err := exec.Command(certmesh(t), "ca", "inspect", "--dir", dir, "-o", "json").Output()
	require.NoError(t, err)
	var st inspected
	require.NoError(t, json.Unmarshal(out, &st))
	return st
}

func caBundle(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command(certmesh(t), "ca", "bundle", "--dir", dir).Output()
	require.NoError(t, err)
	return bytes.TrimSpace(out)
}
