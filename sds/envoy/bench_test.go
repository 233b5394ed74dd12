package envoy

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
)

// streamsPerConn is how many SDS streams share one HTTP/2 connection in the
// benchmarks; Envoy multiplexes its SDS streams over few connections too.
const streamsPerConn = 500

// openStreams opens n streams subscribed to default and ROOTCA, waits for
// each first response and ACKs it, using a few workers to keep setup short.
func openStreams(b *testing.B, e *env, ctx context.Context, n int) []secretv3.SecretDiscoveryService_StreamSecretsClient {
	b.Helper()
	conns := make([]secretv3.SecretDiscoveryServiceClient, (n+streamsPerConn-1)/streamsPerConn)
	for i := range conns {
		conns[i] = e.client(b)
	}
	streams := make([]secretv3.SecretDiscoveryService_StreamSecretsClient, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				st, err := subscribe(ctx, conns[i%len(conns)])
				if err != nil {
					errs <- err
					return
				}
				streams[i] = st
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	return streams
}

func subscribe(ctx context.Context, c secretv3.SecretDiscoveryServiceClient) (secretv3.SecretDiscoveryService_StreamSecretsClient, error) {
	st, err := c.StreamSecrets(ctx)
	if err != nil {
		return nil, err
	}
	names := []string{NameDefault, NameRootCA}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: names}); err != nil {
		return nil, err
	}
	r, err := st.Recv()
	if err != nil {
		return nil, err
	}
	return st, st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: names, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
}

// BenchmarkRotationFanout measures the time from a rotation (the source's
// Changed firing) to the new SVID arriving at each of N streams. It reports
// the p50 and p99 over all streams and iterations, and the slowest stream.
func BenchmarkRotationFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	e := newEnv(b, true)
	ctx, cancel := context.WithCancel(context.Background())
	streams := openStreams(b, e, ctx, n)
	var start atomic.Pointer[time.Time]
	arrivals := make(chan time.Duration, n)
	var readers sync.WaitGroup
	for _, st := range streams {
		readers.Go(func() { readPushes(st, &start, arrivals) })
	}
	defer func() { cancel(); readers.Wait() }()

	var lat []time.Duration
	var slowest time.Duration
	b.ResetTimer()
	for range b.N {
		svid := e.ca.SVID(b, testID, time.Hour)
		now := time.Now()
		start.Store(&now)
		e.src.setSVID(svid)
		for range n {
			d := <-arrivals
			lat = append(lat, d)
			slowest = max(slowest, d)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(slowest), "all-ms")
}

// readPushes plays Envoy on one stream: note when each push arrives, ACK it.
func readPushes(st secretv3.SecretDiscoveryService_StreamSecretsClient, start *atomic.Pointer[time.Time], out chan<- time.Duration) {
	for {
		r, err := st.Recv()
		if err != nil {
			return
		}
		out <- time.Since(*start.Load())
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{NameDefault, NameRootCA}, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
		if st.Send(ack) != nil {
			return
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkIdleStreamMemory measures heap, stack and goroutines per idle
// stream (subscribed, answered, ACKed). Client and server share this
// process, so the figure is an upper bound on the agent's cost: it includes
// the client's half of every stream (one goroutine of gRPC's among them).
func BenchmarkIdleStreamMemory(b *testing.B) {
	const n = 1000
	e := newEnv(b, true)
	var heap, stack, goroutines float64
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		before, g0 := memStats(), runtime.NumGoroutine()
		streams := openStreams(b, e, ctx, n)
		after, g1 := memStats(), runtime.NumGoroutine()
		heap += float64(after.HeapAlloc-before.HeapAlloc) / n
		stack += float64(after.StackInuse-before.StackInuse) / n
		goroutines += float64(g1-g0) / n
		runtime.KeepAlive(streams)
		cancel()
	}
	b.ReportMetric(heap/float64(b.N), "heap-B/stream")
	b.ReportMetric(stack/float64(b.N), "stack-B/stream")
	b.ReportMetric(goroutines/float64(b.N), "goroutines/stream")
}

func memStats() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
