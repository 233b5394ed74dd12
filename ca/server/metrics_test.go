package server

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestMetricsShowAuthoritiesAndRotationPhase(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	srv, err := New(Config{Dir: t.TempDir(), TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Listen: "127.0.0.1:0", Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	got := gather(t, reg)
	require.Len(t, got["certmesh_ca_root_expiry_timestamp_seconds"], 1)
	require.Len(t, got["certmesh_ca_intermediate_expiry_timestamp_seconds"], 1)
	root := srv.CA.Status().Authorities[0]
	require.Equal(t, float64(root.RootNotAfter.Unix()), got["certmesh_ca_root_expiry_timestamp_seconds"][0].GetGauge().GetValue())
	require.Equal(t, map[string]float64{"prepared": 0, "active": 1, "retiring": 0}, phaseOf(got, root.ID))
	require.Len(t, got["certmesh_ca_rotation_next_event_timestamp_seconds"], 1, "the intermediate's renewal is always planned")
	require.Equal(t, float64(root.NextStep.Unix()), got["certmesh_ca_rotation_next_event_timestamp_seconds"][0].GetGauge().GetValue())
	require.Len(t, got["certmesh_ca_next_rotation_timestamp_seconds"], 1)
	require.Equal(t, "renew intermediate", labelsOf(got["certmesh_ca_next_rotation_timestamp_seconds"][0])["step"])
	require.Equal(t, 0.0, got["certmesh_ca_rotation_overdue_seconds"][0].GetGauge().GetValue())
	require.Len(t, got["certmesh_ca_intermediate_not_before_timestamp_seconds"], 1)

	_, err = srv.CA.Rotate()
	require.NoError(t, err)
	got = gather(t, reg)
	require.Len(t, got["certmesh_ca_root_expiry_timestamp_seconds"], 2)
	require.Len(t, got["certmesh_ca_rotation_next_event_timestamp_seconds"], 1)
	require.Len(t, got["certmesh_ca_next_rotation_timestamp_seconds"], 2, "the activation and the old root's intermediate renewal")
	next := srv.CA.Status().Authorities[1]
	require.Equal(t, map[string]float64{"prepared": 1, "active": 0, "retiring": 0}, phaseOf(got, next.ID))
}

func gather(t *testing.T, reg *prometheus.Registry) map[string][]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetMetric()
	}
	return out
}

func labelsOf(m *dto.Metric) map[string]string {
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	return labels
}

func phaseOf(got map[string][]*dto.Metric, authority string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range got["certmesh_ca_authority_phase"] {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["authority"] == authority {
			out[labels["phase"]] = m.GetGauge().GetValue()
		}
	}
	return out
}
