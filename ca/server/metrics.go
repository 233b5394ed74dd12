package server

import (
	"github.com/prometheus/client_golang/prometheus"

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
	}
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rootExpiry, c.interExpiry, c.phase, c.nextEvent, c.phaseEntered} {
		ch <- d
	}
}

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ca.Status()
	for _, a := range st.Authorities {
		ch <- prometheus.MustNewConstMetric(c.rootExpiry, prometheus.GaugeValue, float64(a.RootNotAfter.Unix()), a.ID)
		ch <- prometheus.MustNewConstMetric(c.interExpiry, prometheus.GaugeValue, float64(a.IntermediateEnd.Unix()), a.ID)
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
	if !st.NextEvent.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.nextEvent, prometheus.GaugeValue, float64(st.NextEvent.Unix()))
	}
}
