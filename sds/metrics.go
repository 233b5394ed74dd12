package sds

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type metrics struct {
	expiry        *prometheus.GaugeVec
	notBefore     *prometheus.GaugeVec
	requests      *prometheus.HistogramVec
	renewals      prometheus.Counter
	caFailures    prometheus.Counter
	expired       prometheus.Counter
	bundleUpdates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmesh_agent_svid_expiry_timestamp_seconds",
			Help: "NotAfter of the SVID the agent holds, per SPIFFE ID, as a Unix timestamp.",
		}, []string{"spiffe_id"}),
		notBefore: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmesh_agent_svid_not_before_timestamp_seconds",
			Help: "NotBefore of the SVID the agent holds, per SPIFFE ID, as a Unix timestamp (with expiry: how much of its life is used).",
		}, []string{"spiffe_id"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmesh_agent_svid_request_duration_seconds",
			Help:    "Time to obtain one SVID from the CA (key generation, CSR, round trip), by result.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5},
		}, []string{"result"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_agent_svid_renewals_total", Help: "SVIDs obtained from the CA.",
		}),
		caFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_agent_ca_failures_total", Help: "Failed requests and broken streams to the CA.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_agent_svid_expired_total", Help: "SVIDs that expired before they could be renewed.",
		}),
		bundleUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmesh_agent_bundle_updates_total", Help: "Trust bundle changes received from the CA.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.expiry, m.notBefore, m.requests, m.renewals, m.caFailures, m.expired, m.bundleUpdates)
	}
	return m
}

func (m *metrics) observeSVID(s *x509svid.SVID) {
	m.renewals.Inc()
	m.expiry.WithLabelValues(s.ID.String()).Set(float64(s.Certificates[0].NotAfter.Unix()))
	m.notBefore.WithLabelValues(s.ID.String()).Set(float64(s.Certificates[0].NotBefore.Unix()))
}

// observeRequest records how long one request for an SVID took.
func (m *metrics) observeRequest(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.requests.WithLabelValues(result).Observe(took.Seconds())
}
