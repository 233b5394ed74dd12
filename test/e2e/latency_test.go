package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Latency is one series of the end-to-end latency report (test/bench reads
// the JSON written with -e2e.latency-out).
type Latency struct {
	Chain     string  `json:"chain"` // "mtls" or "plain"
	KeepAlive bool    `json:"keepAlive"`
	N         int     `json:"n"`
	P50ms     float64 `json:"p50Ms"`
	P90ms     float64 `json:"p90Ms"`
	P99ms     float64 `json:"p99Ms"`
	MeanMs    float64 `json:"meanMs"`
}

// measureLatency times requests through the encrypted chain and through the
// same topology in plain TCP: the same number of hops (three forwarders plus
// the wire tap) in front of the same app, with and without connection reuse.
func measureLatency(t *testing.T, c *chain) {
	sidecar := startTap(t, c.app.addr())
	wire := startTap(t, sidecar.addr())
	gateway := startTap(t, wire.addr())
	edge := startTap(t, gateway.addr())
	plain := func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, edge.addr())
			},
		}}
	}
	n := *latencyN
	var out []Latency
	for _, keepAlive := range []bool{false, true} {
		out = append(out,
			series(t, "mtls", keepAlive, n, c.client(t, keepAlive), c.url()),
			series(t, "plain", keepAlive, n, plain(keepAlive), "http://"+host+"/"))
	}
	for _, l := range out {
		t.Logf("%-5s keepAlive=%-5v n=%d p50=%.3fms p90=%.3fms p99=%.3fms", l.Chain, l.KeepAlive, l.N, l.P50ms, l.P90ms, l.P99ms)
	}
	if *latencyOut != "" {
		b, err := json.MarshalIndent(out, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(*latencyOut, b, 0o644))
	}
}

func series(t *testing.T, chain string, keepAlive bool, n int, hc *http.Client, url string) Latency {
	t.Helper()
	_, err := get(hc, url) // warm up (and check) the path
	require.NoError(t, err, chain)
	d := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		body, err := get(hc, url)
		d = append(d, time.Since(start))
		require.NoError(t, err, chain)
		require.Equal(t, appReply, body)
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	pct := func(p float64) float64 { return ms(d[min(len(d)-1, int(p*float64(len(d))))]) }
	return Latency{Chain: chain, KeepAlive: keepAlive, N: n, P50ms: pct(0.5), P90ms: pct(0.9), P99ms: pct(0.99), MeanMs: ms(sum / time.Duration(n))}
}
