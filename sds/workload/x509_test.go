package workload

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
)

const eventually = 10 * time.Second

func TestFetchX509SVID(t *testing.T) {
	e := startRegistered(t)
	want := e.src.issue(t, webID)
	c := e.client(t)

	got, err := c.FetchX509SVID(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, rawCerts(want.Certificates), rawCerts(got.Certificates))
	wantKey, err := x509.MarshalPKCS8PrivateKey(want.PrivateKey)
	require.NoError(t, err)
	gotKey, err := x509.MarshalPKCS8PrivateKey(got.PrivateKey)
	require.NoError(t, err)
	require.Equal(t, wantKey, gotKey)

	xc, err := c.FetchX509Context(testCtx(t))
	require.NoError(t, err)
	bundle, err := xc.Bundles.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, bundle.Equal(e.src.ca.Bundle()))
	_, _, err = x509svid.Verify(got.Certificates, xc.Bundles)
	require.NoError(t, err, "the SVID must verify against the bundle sent with it")
}

func TestFetchX509SVIDWaitsForFirstSVID(t *testing.T) {
	e := startRegistered(t)
	c := e.client(t)
	type result struct {
		svid *x509svid.SVID
		err  error
	}
	got := make(chan result, 1)
	go func() {
		s, err := c.FetchX509SVID(testCtx(t))
		got <- result{s, err}
	}()
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(e.metrics.Streams(methodX509SVID)) == 1
	}, eventually, time.Millisecond, "the stream must wait, not fail")

	want := e.src.issue(t, webID)
	r := <-got
	require.NoError(t, r.err)
	require.Equal(t, rawCerts(want.Certificates), rawCerts(r.svid.Certificates))
}

// x509Watcher hands each update of WatchX509Context to the test.
type x509Watcher struct {
	updates chan *workloadapi.X509Context
}

func (w *x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.updates <- c }
func (w *x509Watcher) OnX509ContextWatchError(error)                  {}

func TestWatchX509ContextSeesRotation(t *testing.T) {
	e := startRegistered(t)
	first := e.src.issue(t, webID)
	c := e.client(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	w := &x509Watcher{updates: make(chan *workloadapi.X509Context, 10)}
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, w) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	update := <-w.updates
	require.Equal(t, first.Certificates[0].SerialNumber, update.DefaultSVID().Certificates[0].SerialNumber)

	// A change signal with identical content must not produce a message:
	// wait until the handler has looked again, then rotate. The next
	// message must be the rotated SVID, not a repeat of the first.
	calls := e.src.x509Calls()
	e.src.touch()
	require.Eventually(t, func() bool { return e.src.x509Calls() > calls }, eventually, time.Millisecond)
	second := e.src.issue(t, webID)

	update = <-w.updates
	require.Equal(t, second.Certificates[0].SerialNumber, update.DefaultSVID().Certificates[0].SerialNumber)
	require.Equal(t, 2.0, testutil.ToFloat64(e.metrics.Updates(methodX509SVID)))
}

func TestFetchX509Bundles(t *testing.T) {
	e := startRegistered(t)
	c := e.client(t)
	set, err := c.FetchX509Bundles(testCtx(t))
	require.NoError(t, err)
	b, err := set.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, b.Equal(e.src.ca.Bundle()))
	require.Equal(t, 1, set.Len())
}

// TestStreamEndsWhenClientLeaves opens streams that are waiting (no SVID
// yet) and streams that have sent, drops them, and checks that every
// handler goroutine returns; goleak in TestMain catches any that do not.
func TestStreamEndsWhenClientLeaves(t *testing.T) {
	e := startRegistered(t)
	raw := e.raw(t)
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(testCtx(t), securityHeader, "true"))

	waiting, err := raw.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	require.NoError(t, err)
	bundles, err := raw.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
	require.NoError(t, err)
	_, err = bundles.Recv()
	require.NoError(t, err)
	jwt, err := raw.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
	require.NoError(t, err)
	_, err = jwt.Recv()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(e.metrics.Streams(methodX509SVID)) == 1
	}, eventually, time.Millisecond)

	cancel()
	_, err = waiting.Recv()
	require.Error(t, err)
	require.Eventually(t, func() bool {
		return openStreams(e.metrics) == 0
	}, eventually, time.Millisecond, "every stream handler must return")
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// openStreams sums the open-streams gauge over the streaming methods.
func openStreams(m *Metrics) float64 {
	var n float64
	for _, method := range []string{methodX509SVID, methodX509Bundles, methodJWTBundles} {
		n += testutil.ToFloat64(m.Streams(method))
	}
	return n
}
