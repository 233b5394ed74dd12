package edge

import (
	"errors"
	"strings"

	"github.com/go-acme/lego/v4/acme"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the edge certificates' state to Prometheus. It reads Status at
// scrape time, so the figures are never stale and the workers carry no metrics code.
// Register it with the same registerer as the rest of the process:
//
//	reg.MustRegister(edge.NewCollector(m.Status))
type Collector struct {
	status    func() []CertStatus
	expiry    *prometheus.Desc
	renewal   *prometheus.Desc
	retry     *prometheus.Desc
	failures  *prometheus.Desc
	orders    *prometheus.Desc
	lastError *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over status (usually (*Manager).Status).
func NewCollector(status func() []CertStatus) *Collector {
	return &Collector{
		status: status,
		expiry: prometheus.NewDesc("certmesh_edge_certificate_expiry_timestamp_seconds",
			"NotAfter of the edge certificate being served, as a Unix timestamp.", []string{"name", "issuer"}, nil),
		renewal: prometheus.NewDesc("certmesh_edge_certificate_next_renewal_timestamp_seconds",
			"When the edge certificate is next due for renewal, as a Unix timestamp.", []string{"name"}, nil),
		retry: prometheus.NewDesc("certmesh_edge_certificate_retry_timestamp_seconds",
			"When a failed order is retried (backoff or the CA's Retry-After), as a Unix timestamp.", []string{"name"}, nil),
		failures: prometheus.NewDesc("certmesh_edge_certificate_consecutive_failures",
			"Failed orders since the last success, per edge certificate.", []string{"name"}, nil),
		orders: prometheus.NewDesc("certmesh_edge_orders_total",
			"ACME orders placed by this process, per edge certificate (issuances plus failed attempts).", []string{"name"}, nil),
		lastError: prometheus.NewDesc("certmesh_edge_certificate_last_error",
			"1 while the certificate's last order failed, labelled with the ACME problem type (rateLimited, unauthorized, …) or a local cause.",
			[]string{"name", "type"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.expiry, c.renewal, c.retry, c.failures, c.orders, c.lastError} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.status() {
		if !s.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(s.NotAfter.Unix()), s.Name, s.Issuer)
		}
		if !s.NextRenewal.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.renewal, prometheus.GaugeValue, float64(s.NextRenewal.Unix()), s.Name)
		}
		if !s.RetryAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.retry, prometheus.GaugeValue, float64(s.RetryAt.Unix()), s.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(s.Failures), s.Name)
		ch <- prometheus.MustNewConstMetric(c.orders, prometheus.CounterValue, float64(s.Orders), s.Name)
		if s.LastError != nil {
			ch <- prometheus.MustNewConstMetric(c.lastError, prometheus.GaugeValue, 1, s.Name, ErrorType(s.LastError))
		}
	}
}

// ErrorType names an order failure for a metric label or a diagnosis: the ACME
// problem type without its URN prefix when the CA sent one, else a small fixed set.
func ErrorType(err error) string {
	var pd *acme.ProblemDetails
	switch {
	case errors.As(err, &pd) && pd.Type != "":
		t := strings.TrimPrefix(pd.Type, "urn:ietf:params:acme:error:")
		if strings.ContainsAny(t, ":/ ") || len(t) > 40 {
			return "other"
		}
		return t
	case errors.Is(err, ErrRateLimited):
		return "rateLimited"
	case errors.Is(err, ErrOrderInProgress):
		return "orderInProgress"
	case errors.Is(err, ErrInvalidConfig):
		return "invalidConfig"
	case errors.Is(err, ErrChallengeFailed):
		return "challengeFailed"
	}
	return "other"
}
