package service

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the signing service does. Registered on the given
// registerer, or on none (tests, benchmarks) when it is nil.
type Metrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// NewMetrics creates the service's metrics and registers them on reg if not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_ca_svids_issued_total",
			Help: "X.509-SVIDs issued by the CA service, by how the caller was authenticated.",
		}, []string{"attestor"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_ca_refusals_total",
			Help: "Certificate requests refused by the CA service, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.issued, m.refused)
	}
	return m
}

// Refused returns the refusal counter for a reason (for tests and status).
func (m *Metrics) Refused(reason string) prometheus.Counter { return m.refused.WithLabelValues(reason) }
