package envoy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of certmesh_sds_envoy_refused_total; fixed strings because they
// are metric label values.
const (
	reasonAttestation = "attestation"
	reasonForbidden   = "forbidden"
	reasonInvalid     = "invalid"
)

// Metrics are the handler's Prometheus metrics. They are per Handler, not
// package globals, so tests and several handlers in one process do not
// share counters.
type Metrics struct {
	streamsOpen prometheus.Gauge
	pushes      prometheus.Counter
	nacks       prometheus.Counter
	unknown     prometheus.Counter
	refused     *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg; a nil reg
// leaves them unregistered (tests, or a caller that does not export them).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		streamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certmesh_sds_envoy_streams_open",
			Help: "SDS StreamSecrets streams currently open.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_sds_envoy_pushes_total",
			Help: "SDS responses sent on streams.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_sds_envoy_nacks_total",
			Help: "SDS responses rejected by Envoy (requests with error_detail).",
		}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_sds_envoy_unknown_resources_total",
			Help: "SDS requests refused for naming an unknown resource.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_sds_envoy_refused_total",
			Help: "SDS calls refused, by reason (attestation, forbidden, invalid).",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.streamsOpen, m.pushes, m.nacks, m.unknown, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("envoy: register metrics: %w", err)
		}
	}
	return m, nil
}
