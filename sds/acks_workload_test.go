package sds_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// podTokens attests "pod:UID" as web's pod UID, and "unbound" as web bound
// to no pod, as the Kubernetes attestor does for a token the TokenReview
// binds (or not) to a pod.
type podTokens struct{}

func (podTokens) Attest(_ context.Context, cred identity.Credential) (identity.Identity, error) {
	if uid, ok := strings.CutPrefix(cred.BearerToken, "pod:"); ok {
		return identity.Identity{ID: web, Attestor: "k8s_sat", Instance: uid}, nil
	}
	if cred.BearerToken == "unbound" {
		return identity.Identity{ID: web, Attestor: "k8s_sat"}, nil
	}
	return identity.Identity{}, identity.ErrNotApplicable
}

// syncBuffer is a log destination safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// startWorkloadAgent runs a workload-mode agent that presents token from a
// file, as `certmesh agent --token-file` does.
func startWorkloadAgent(t *testing.T, c *caServer, token string, logs *syncBuffer) *agentRun {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(token), 0o600))
	clk := clocktesting.NewFakeClock(time.Now())
	a, err := sds.New(sds.Config{
		TrustDomain: td, ServerAddr: c.addr, TrustBundle: c.CA.Roots(), Credential: sds.TokenFile{Path: path},
		Clock: clk, Jitter: func() float64 { return 0.5 }, Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{Agent: a, clock: clk, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-r.done) })
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not get its SVID within 10s")
	}
	return r
}

func refusals(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "certmesh_ca_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestWorkloadModeAgentReportCounts: a workload-mode agent reports with its
// pod's token and fills its pod's slot; two pods of one ServiceAccount fill
// two.
func TestWorkloadModeAgentReportCounts(t *testing.T) {
	c := startCA(t, t.TempDir(), "127.0.0.1:0", func(cfg *server.Config) { cfg.Attestors = []identity.Attestor{podTokens{}} })
	var logs syncBuffer
	a1 := startWorkloadAgent(t, c, "pod:uid-1", &logs)
	a2 := startWorkloadAgent(t, c, "pod:uid-2", &logs)
	waitFor(t, "both pods' reports", func() bool {
		a1.clock.Step(200 * time.Millisecond)
		a2.clock.Step(200 * time.Millisecond)
		return c.Acks().Agents() == 2
	})
}

// TestAgentStopsReportingWhenRefused: an agent the CA takes no reports
// from (here a token bound to no pod) is told PermissionDenied once, says
// so once, and asks no more.
func TestAgentStopsReportingWhenRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := startCA(t, t.TempDir(), "127.0.0.1:0", func(cfg *server.Config) {
		cfg.Attestors, cfg.Registerer = []identity.Attestor{podTokens{}}, reg
	})
	var logs syncBuffer
	a := startWorkloadAgent(t, c, "unbound", &logs)
	const said = "not reporting them again"
	waitFor(t, "the agent to give up reporting", func() bool {
		a.clock.Step(200 * time.Millisecond)
		return logs.count(said) == 1
	})
	require.Equal(t, 1.0, refusals(t, reg, "ack_not_agent"))
	for range 3 { // heartbeats that would each have been refused
		a.clock.Step(11 * time.Second)
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, 1.0, refusals(t, reg, "ack_not_agent"), "no report after the refusal")
	require.Equal(t, 1, logs.count(said), "said once")
	require.Zero(t, c.Acks().Agents())
}
