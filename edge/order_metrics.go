package edge

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OrderMetrics counts what happens to ACME orders as it happens (the
// Collector reports the state of each certificate at scrape time): how long
// orders take, and every failure by ACME problem type, so an alert can see
// a rate-limit or a run of unauthorized challenges.
type OrderMetrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

// NewOrderMetrics creates the metrics and registers them on reg if not nil.
func NewOrderMetrics(reg prometheus.Registerer) *OrderMetrics {
	m := &OrderMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmesh_edge_order_duration_seconds",
			Help:    "Time of one ACME order from new order to certificate, by result.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmesh_edge_acme_errors_total",
			Help: "Failed edge certificate attempts, by ACME problem type (rateLimited, unauthorized, badNonce, …) or local cause.",
		}, []string{"type"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.errors)
	}
	return m
}

func (m *OrderMetrics) observeOrder(took time.Duration, err error) {
	if m == nil {
		return
	}
	result := "issued"
	if err != nil {
		result = "failed"
	}
	m.duration.WithLabelValues(result).Observe(took.Seconds())
}

func (m *OrderMetrics) observeFailure(err error) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(ErrorType(err)).Inc()
}
