package edge

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/pebbletest"
)

// BenchmarkIssuance measures one order end to end against Pebble (median reported);
// run with -benchtime=20x for the median of 20.
func BenchmarkIssuance(b *testing.B) {
	p := pebbletest.Start(b, pebbletest.Options{})
	for _, solver := range []ChallengeType{HTTP01, DNS01} {
		b.Run(string(solver), func(b *testing.B) {
			dir := b.TempDir() // shared: the account is registered once
			var samples []time.Duration
			i := 0
			for b.Loop() {
				i++
				name := fmt.Sprintf("c%d", i)
				spec := httpSpec(name, name+".bench.test")
				if solver == DNS01 {
					spec = dnsSpec(p, name, name+".bench.test")
				}
				r := newRig(b, p, spec)
				r.cfg.Dir, r.cfg.TLSALPN01Addr = dir, ""
				samples = append(samples, issueOnce(b, r, name))
			}
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms/issue-median")
		})
	}
}

// issueOnce runs a Manager until name is served and returns how long that took.
func issueOnce(b *testing.B, r *rig, name string) time.Duration {
	m, err := New(r.cfg)
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- m.Run(ctx) }()
	waitServed(b, m, name)
	took := time.Since(start)
	cancel()
	require.NoError(b, <-done)
	return took
}

// BenchmarkHundredAtOnce requests 100 certificates at once and reports the wall time
// and the number of orders Pebble saw (must be 100: no duplicates).
func BenchmarkHundredAtOnce(b *testing.B) {
	p := pebbletest.Start(b, pebbletest.Options{})
	totalFailed := 0
	for b.Loop() {
		specs := make([]CertificateSpec, 100)
		for i := range specs {
			name := fmt.Sprintf("h%03d", i)
			specs[i] = httpSpec(name, name+".bulk.test")
		}
		r := newRig(b, p, specs...)
		r.cfg.TLSALPN01Addr = ""
		failures := &failureCounter{}
		r.cfg.Observer = failures
		m, err := New(r.cfg)
		require.NoError(b, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- m.Run(ctx) }()
		for _, s := range specs {
			waitServed(b, m, s.Name)
		}
		wall := time.Since(start)
		cancel()
		require.NoError(b, <-done)
		// One order per name, plus one per failed order the Manager retried (a
		// rare stall in lego's wait for the certificate, see servedBound): an
		// extra order without a failure would be a duplicate.
		orders, failed := len(r.orders.snapshot()), int(failures.n.Load())
		require.Equal(b, 100+failed, orders, "orders placed vs 100 names + %d failed orders", failed)
		b.ReportMetric(wall.Seconds(), "s/100-certs")
		b.ReportMetric(float64(orders), "orders")
		totalFailed += failed
		b.ReportMetric(float64(totalFailed), "failed-orders-all-runs")
	}
}

// failureCounter is an Observer counting failed orders.
type failureCounter struct{ n atomic.Int64 }

func (f *failureCounter) CertificateStored(string, Served, bool)     {}
func (f *failureCounter) CertificateFailed(string, error, time.Time) { f.n.Add(1) }
