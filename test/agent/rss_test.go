package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certmesh/certmesh/test/harness"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// streamsPerConn stays under the agent's per-connection stream limit, as
// Envoy multiplexes SDS streams over a few connections.
const streamsPerConn = 500

// BenchmarkAgentStreams opens N SDS streams (default + ROOTCA) against a
// real `certmesh dev` process and reports the agent's RSS per stream, then
// the time from `certmesh ca rotate` to the new bundle arriving at every
// stream (p50, p99, last).
func BenchmarkAgentStreams(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				benchStreams(b, n)
			}
		})
	}
}

func benchStreams(b *testing.B, n int) {
	dir := harness.StateDir(b)
	d := startDev(b, dir)
	defer d.stop(b)
	idle := rssKiB(b, d.Pid())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	arrivals := make(chan time.Time, n)
	ready := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		if i%streamsPerConn == 0 {
			c, err := grpc.NewClient(d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		wg.Add(1)
		go func(c *grpc.ClientConn) {
			defer wg.Done()
			watchOnce(ctx, c, ready, arrivals)
		}(conns[len(conns)-1])
	}
	waitN(b, ready, n, 60*time.Second, "streams to receive their first secrets")
	loaded := rssKiB(b, d.Pid())
	b.ReportMetric(float64(loaded-idle)*1024/float64(n), "agent-rss-bytes/stream")

	start := time.Now()
	if out, err := exec.Command(certmesh(b), "ca", "rotate", "--dir", dir).CombinedOutput(); err != nil {
		b.Fatalf("rotate: %v %s", err, out)
	}
	lat := make([]time.Duration, 0, n)
	deadline := time.After(60 * time.Second)
	for len(lat) < n {
		select {
		case at := <-arrivals:
			lat = append(lat, at.Sub(start))
		case <-deadline:
			b.Fatalf("only %d of %d streams saw the rotation", len(lat), n)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[n/2].Milliseconds()), "push-p50-ms")
	b.ReportMetric(float64(lat[n*99/100].Milliseconds()), "push-p99-ms")
	b.ReportMetric(float64(lat[n-1].Milliseconds()), "push-last-ms")
	cancel()
	wg.Wait()
}

// watchOnce subscribes like Envoy, ACKs the first response, then reports
// the arrival of the next one (the rotation).
func watchOnce(ctx context.Context, c *grpc.ClientConn, ready chan<- struct{}, arrivals chan<- time.Time) {
	s, err := secretv3.NewSecretDiscoveryServiceClient(c).StreamSecrets(ctx)
	if err != nil {
		return
	}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench"}, ResourceNames: []string{"default", "ROOTCA"}, TypeUrl: secretType}
	if s.Send(req) != nil {
		return
	}
	first, err := s.Recv()
	if err != nil {
		return
	}
	ack := &discoveryv3.DiscoveryRequest{Node: req.Node, ResourceNames: req.ResourceNames, TypeUrl: secretType,
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()}
	if s.Send(ack) != nil {
		return
	}
	ready <- struct{}{}
	if _, err := s.Recv(); err == nil {
		arrivals <- time.Now()
	}
}

func waitN(b *testing.B, ch <-chan struct{}, n int, limit time.Duration, what string) {
	deadline := time.After(limit)
	for i := 0; i < n; i++ {
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("only %d of %d %s", i, n, what)
		}
	}
}

func rssKiB(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
