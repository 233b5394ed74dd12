package sds_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/sds"
)

// TestAgentMetricsShowSVIDLifeAndRequestLatency checks what the alert "SVID
// past 80% of its life" needs: NotBefore and NotAfter per identity, and one
// request latency observation per SVID obtained.
func TestAgentMetricsShowSVIDLifeAndRequestLatency(t *testing.T) {
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	token, _, err := c.Tokens.Create(nodeID, time.Minute)
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	a, err := sds.New(sds.Config{
		TrustDomain: td, ServerAddr: c.addr, TrustBundle: c.CA.Roots(),
		Credential: sds.NewJoinToken(token), Workloads: []spiffeid.ID{web}, Registerer: reg,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("agent not ready within 10s")
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	byName := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "spiffe_id" && l.GetValue() == web.String() {
					byName[mf.GetName()] = m.GetGauge().GetValue()
				}
			}
			if mf.GetName() == "certmesh_agent_svid_request_duration_seconds" {
				byName[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	s, ok := a.X509SVID(web)
	require.True(t, ok)
	require.Equal(t, float64(s.Certificates[0].NotBefore.Unix()), byName["certmesh_agent_svid_not_before_timestamp_seconds"])
	require.Equal(t, float64(s.Certificates[0].NotAfter.Unix()), byName["certmesh_agent_svid_expiry_timestamp_seconds"])
	require.GreaterOrEqual(t, byName["certmesh_agent_svid_request_duration_seconds"], 2.0, "node SVID and web SVID")
}
