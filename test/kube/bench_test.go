package kube_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkSVIDsTokenReview measures SVIDs issued per second for callers
// authenticating with ServiceAccount tokens (TokenReview through the real
// apiserver), and apiserver requests per SVID, counted by a transport
// wrapper on the server's client. "cached": a burst of pods whose tokens are
// each presented repeatedly (the review cache answers); "uncached": the
// cache holds one entry and tokens rotate, so every request is reviewed:
// with a LIST of Services and a pod GET each, without the LIST (Service watch
// cache), or with the TokenReview alone (Service and Pod watch caches). The
// pods exist before the server starts, so a Pod cache holds them all.
func BenchmarkSVIDsTokenReview(b *testing.B) {
	for _, bc := range []struct {
		name          string
		cacheSize     int
		watchServices bool
		watchPods     bool
	}{
		{"cached", 0, true, true},
		{"uncached", 1, false, false},
		{"uncached-watched-services", 1, true, false},
		{"uncached-watched-services-and-pods", 1, true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ns := cluster.Namespace(b)
			const pods = 20
			tokens := make([]string, pods)
			for i := range tokens {
				pod := cluster.Pod(b, ns, fmt.Sprintf("p-%d", i), "web", map[string]string{"app": "web"})
				tokens[i] = cluster.ServiceAccountToken(b, ns, "web", audience, pod)
			}
			var requests atomic.Int64
			srv := startServer(b, serverOpts{ns: ns, requests: &requests, cacheSize: bc.cacheSize,
				watchServices: bc.watchServices, watchPods: bc.watchPods})
			client := caClient(b, srv)
			csr := newCSR(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			_, err := requestSVID(ctx, client, csr, tokens[0]) // connection set up
			require.NoError(b, err)
			requests.Store(0)
			b.ResetTimer()
			var i atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := requestSVID(ctx, client, csr, tokens[i.Add(1)%pods]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(requests.Load())/float64(b.N), "apireq/svid")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svid/s")
		})
	}
}
