package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/certmesh/certmesh/ca"
)

// caCollector exports the CA's authorities and rotation phase. It reads
// CA.Status at scrape time, so an operator sees what the CA holds now.
type caCollector struct {
	ca           *ca.CA
	rootExpiry   *prometheus.Desc
	interExpiry  *prometheus.Desc
	phase        *prometheus.Desc
	nextEvent    *prometheus.Desc
	phaseEntered *prometheus.Desc
	forced       *prometheus.Desc
	interStart   *prometheus.Desc
	nextStep     *prometheus.Desc
	overdue      *prometheus.Desc
	renewFails   *prometheus.Desc
}

var _ prometheus.Collector = (*caCollector)(nil)

// phases are the values of certmesh_ca_authority_phase's phase label: every
// one is exported (0 or 1) so a query can tell "not active" from "absent".
var phases = []ca.Phase{ca.PhasePrepared, ca.PhaseActive, ca.PhaseRetiring}

func newCACollector(c *ca.CA) *caCollector {
	return &caCollector{
		ca: c,
		rootExpiry: prometheus.NewDesc("certmesh_ca_root_expiry_timestamp_seconds",
			"NotAfter of each authority's root certificate, as a Unix timestamp.", []string{"authority"}, nil),
		interExpiry: prometheus.NewDesc("certmesh_ca_intermediate_expiry_timestamp_seconds",
			"NotAfter of each authority's intermediate (signing) certificate, as a Unix timestamp.", []string{"authority"}, nil),
		phase: prometheus.NewDesc("certmesh_ca_authority_phase",
			"Rotation phase of each authority: 1 for its current phase (prepared, active, retiring), 0 for the others.",
			[]string{"authority", "phase"}, nil),
		nextEvent: prometheus.NewDesc("certmesh_ca_rotation_next_event_timestamp_seconds",
			"When the rotation state machine is next due to move (activation or retirement), as a Unix timestamp; absent when nothing is pending.",
			nil, nil),
		phaseEntered: prometheus.NewDesc("certmesh_ca_authority_phase_since_timestamp_seconds",
			"When each authority entered its current phase (prepared or activated), as a Unix timestamp.", []string{"authority"}, nil),
		forced: prometheus.NewDesc("certmesh_ca_rotation_forced_total",
			"Root switches an operator forced past lagging watchers (`certmesh ca rotate --force`) since this process started.", nil, nil),
		interStart: prometheus.NewDesc("certmesh_ca_intermediate_not_before_timestamp_seconds",
			"NotBefore of each authority's signing intermediate, as a Unix timestamp (with the expiry: how far through its life it is).", []string{"authority"}, nil),
		nextStep: prometheus.NewDesc("certmesh_ca_next_rotation_timestamp_seconds",
			"When each authority next moves (step: activate root, retire root, renew intermediate, retire old intermediate), as a Unix timestamp.",
			[]string{"authority", "step"}, nil),
		overdue: prometheus.NewDesc("certmesh_ca_rotation_overdue_seconds",
			"How long the earliest due rotation step has not happened (held by lagging watchers, or failing); 0 when none is due.", nil, nil),
		renewFails: prometheus.NewDesc("certmesh_ca_intermediate_renewal_failures_total",
			"Automatic intermediate renewals that failed (and are retried) since this process started.", nil, nil),
	}
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rootExpiry, c.interExpiry, c.phase, c.nextEvent, c.phaseEntered, c.forced,
		c.interStart, c.nextStep, c.overdue, c.renewFails} {
		ch <- d
	}
}

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ca.Status()
	for _, a := range st.Authorities {
		ch <- prometheus.MustNewConstMetric(c.rootExpiry, prometheus.GaugeValue, float64(a.RootNotAfter.Unix()), a.ID)
		ch <- prometheus.MustNewConstMetric(c.interExpiry, prometheus.GaugeValue, float64(a.IntermediateEnd.Unix()), a.ID)
		ch <- prometheus.MustNewConstMetric(c.interStart, prometheus.GaugeValue, float64(a.IntermediateStart.Unix()), a.ID)
		if !a.NextStep.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.nextStep, prometheus.GaugeValue, float64(a.NextStep.Unix()), a.ID, a.NextStepKind)
		}
		for _, p := range phases {
			v := 0.0
			if a.Phase == p {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, a.ID, string(p))
		}
		since := a.PreparedAt
		if a.Phase != ca.PhasePrepared && !a.ActivatedAt.IsZero() {
			since = a.ActivatedAt
		}
		if !since.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.phaseEntered, prometheus.GaugeValue, float64(since.Unix()), a.ID)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.forced, prometheus.CounterValue, float64(st.ForcedActivations))
	ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, st.Overdue.Seconds())
	ch <- prometheus.MustNewConstMetric(c.renewFails, prometheus.CounterValue, float64(st.RenewalFailures))
	if !st.NextEvent.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.nextEvent, prometheus.GaugeValue, float64(st.NextEvent.Unix()))
	}
}

// NewRegistry is a metrics registry with the Go runtime and process
// collectors, as every certmesh process exports them.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// setupMetrics picks the registry /metrics serves.
func (s *Server) setupMetrics() error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	if s.cfg.Registerer == nil {
		s.cfg.Registerer = NewRegistry()
	}
	reg, ok := s.cfg.Registerer.(*prometheus.Registry)
	if !ok {
		return errors.New("server: MetricsAddr needs the Registerer to be a *prometheus.Registry")
	}
	s.metrics = reg
	return nil
}

// serveMetrics adds the metrics listener to Run. The server is ready once New
// has returned (the CA is loaded), dev mode once its agent holds its SVIDs.
func (s *Server) serveMetrics() {
	if s.metrics == nil {
		return
	}
	ready := func() bool { return true }
	if s.local != nil {
		ready = s.local.isReady
	}
	s.runners = append(s.runners, func(ctx context.Context) error {
		return ServeMetrics(ctx, s.cfg.MetricsAddr, s.metrics, ready)
	})
}

// ServeMetrics serves /metrics, /healthz (the process is up) and /readyz
// (ready() says the component has what it needs to serve) until ctx ends.
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	// A scrape is one small GET: every phase of a connection is bounded.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 90 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
