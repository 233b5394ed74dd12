package workload

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the Workload API does. Registered on the given
// registerer, or on none (tests) when it is nil.
type Metrics struct {
	streams *prometheus.GaugeVec
	updates *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// NewMetrics creates the handler's metrics and registers them on reg if not
// nil. Registering twice on one registerer panics, as MustRegister does:
// that is a wiring bug in cmd/, not a runtime condition.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmesh_workload_api_streams_open",
			Help: "Open Workload API streams, by method.",
		}, []string{"method"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_workload_api_updates_sent_total",
			Help: "Messages sent on Workload API streams, by method.",
		}, []string{"method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_workload_api_refusals_total",
			Help: "Workload API calls refused or failed, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.updates, m.refused)
	}
	return m
}

// streamOpened counts an open stream and returns the function that closes it.
func (m *Metrics) streamOpened(method string) func() {
	g := m.streams.WithLabelValues(method)
	g.Inc()
	return g.Dec
}

// Streams returns the open-streams gauge of a method (for tests and status).
func (m *Metrics) Streams(method string) prometheus.Gauge { return m.streams.WithLabelValues(method) }

// Refused returns the refusal counter of a reason (for tests and status).
func (m *Metrics) Refused(reason string) prometheus.Counter { return m.refused.WithLabelValues(reason) }

// Updates returns the sent-messages counter of a method (for tests and status).
func (m *Metrics) Updates(method string) prometheus.Counter { return m.updates.WithLabelValues(method) }
