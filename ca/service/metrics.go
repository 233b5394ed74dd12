package service

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the signing service does. Registered on the given
// registerer, or on none (tests, benchmarks) when it is nil.
type Metrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
	signing prometheus.Histogram
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
		signing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "certmesh_ca_signing_duration_seconds",
			Help:    "Time to sign one X.509-SVID (key usage checks, signature, chain assembly).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.issued, m.refused, m.signing)
	}
	return m
}

// Refused returns the refusal counter for a reason (for tests and status).
func (m *Metrics) Refused(reason string) prometheus.Counter { return m.refused.WithLabelValues(reason) }

// Signing returns the signing-latency histogram (for tests and benchmarks).
func (m *Metrics) Signing() prometheus.Histogram { return m.signing }
